"""Requests this server makes to URLs that clients registered: back-channel logout POSTs
(tokens/logout.py), a client's ``jwks_uri`` (tokens/client_keys.py) and its ``request_uri``
(tokens/oauth/request_objects.py). One SSRF guard for all of them: the address is resolved,
refused unless public, and pinned, so DNS cannot change it between the check and the connect;
redirects are never followed (they could lead past the guard).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.error
import urllib.request


class SSRFRefused(OSError):
    """The URI leads into a private network."""


class FetchFailed(Exception):
    """A registered URL could not be fetched: refused, unreachable, not 200, or too large."""


def _public_address(host: str, port: int) -> str:
    """Resolve ``host`` and return the address to connect to, refusing anything not public
    (loopback, private, link-local, shared 100.64/10, cloud metadata, multicast, ...)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise SSRFRefused(
                f"{host} resolves to a non-public address ({ip}); not sending (SSRF guard)"
            )
    return infos[0][4][0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, so DNS cannot change it in between."""

    def connect(self) -> None:
        self.sock = socket.create_connection(
            (_public_address(self.host, self.port), self.port), self.timeout
        )


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = socket.create_connection(
            (_public_address(self.host, self.port), self.port), self.timeout
        )
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_PinnedHTTPConnection, req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PinnedHTTPSConnection, req, context=self._context)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Only the registered URI's own answer counts; a redirect is neither followed (it could
    lead past the SSRF guard, and would turn a POST into a GET) nor a success."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def opener(*, allow_private: bool) -> urllib.request.OpenerDirector:
    """An opener that refuses non-public addresses unless ``allow_private`` (tests, or every
    relying party inside the network), and never follows redirects."""
    handlers: list = [_NoRedirects()]
    if not allow_private:
        handlers += [_PinnedHTTPHandler(), _PinnedHTTPSHandler()]
    return urllib.request.build_opener(*handlers)


def fetch(url: str, *, accept: str, max_bytes: int, timeout: float, allow_private: bool) -> bytes:
    """GET ``url`` through the guard: its 200 body, at most ``max_bytes``, or FetchFailed."""
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - registered URL
    try:
        with opener(allow_private=allow_private).open(request, timeout=timeout) as response:
            if response.status != 200:
                raise FetchFailed(f"HTTP {response.status}")
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as failure:  # includes 3xx: redirects are not followed
        raise FetchFailed(f"HTTP {failure.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as failure:
        raise FetchFailed(str(getattr(failure, "reason", failure))[:200]) from None
    if len(body) > max_bytes:
        raise FetchFailed(f"larger than {max_bytes} bytes")
    return body
