"""Hypothesis strategies for hostile HTTP requests: valid requests, then mutated.

A request starts from one of a few valid shapes (real client ids, secrets, codes, tokens,
redirect URIs) and goes through a handful of mutations: a parameter dropped, replaced by a
hostile value (huge, empty, NUL and control characters, quotes and backslashes, non-ASCII,
percent-escapes, invalid UTF-8), repeated (RFC 6749 §3.1/§3.2: an error), or an unknown one
added. The body is then encoded as a form, or not quite: invalid UTF-8 bytes, JSON instead of a
form, multipart, a wrong or missing Content-Type, a charset. Headers get malformed Basic and
Bearer credentials and giant values.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from tests.fuzz.harness import Sent

FORM = "application/x-www-form-urlencoded"

HOSTILE_VALUES = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\t\x0b\x0c",
    "\x01\x02\x1f\x7f",
    '"',
    "\\",
    "'\"<>&;",
    "%",
    "%00",
    "%FF%FE",
    "+",
    "é",
    "ß☃",
    "😀" * 3,
    "\u2028\u202e",
    "\ufeff",
    "null",
    "[]",
    "{}",
    "-1",
    "0",
    "1e309",
    "99999999999999999999",
    "../../etc/passwd",
    "javascript:alert(1)",
    "https://evil.example/cb",
    "http://127.0.0.1:8765/cb#frag",
    "https://app.example.com/callback/",
    "openid openid",
    "openid  profile",
    " openid",
    "OPENID",
    "admin",
    "S256",
    "plain",
    "none login",
    "code token",
    "x" * 255,
    "x" * 4096,  # the longest value the protocol endpoints read
    "x" * 4097,
    "y" * 16_385,  # more than the whole body a protocol endpoint reads
    "é" * 2049,  # 4098 bytes of UTF-8, 2049 characters
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    "eyJhbGciOiJIUzI1NiJ9." + "A" * 40 + ".sig",
]
HOSTILE_NAMES = [
    "",
    " ",
    "\x00",
    "é",
    '"',
    "\\",
    "n" * 101,
    "n" * 5000,
    "client_id ",
    "CLIENT_ID",
    "grant_type[]",
    "a[b]",
    "__proto__",
    "%00",
]


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
_HOSTILE = st.sampled_from(HOSTILE_VALUES)
_HOSTILE_NAMES = st.sampled_from(HOSTILE_NAMES)
_ANY_VALUE = st.one_of(_HOSTILE, _TEXT)
_MUTATIONS = st.sampled_from(["drop", "replace", "repeat", "add", "valid", "rename"])


def text() -> st.SearchStrategy[str]:
    """Short random text, control characters and astral planes included (no surrogates)."""
    return _TEXT


class Values:
    """Strategies for each parameter's values, built once: the valid ones (two chances in
    four), hostile ones and random text."""

    def __init__(self, valid: dict[str, list[str]]):
        self.valid = valid
        self.names = st.one_of(st.sampled_from(sorted(valid)), _HOSTILE_NAMES, _TEXT)
        self._cache: dict[str, st.SearchStrategy[str]] = {}

    def __call__(self, name: str) -> st.SearchStrategy[str]:
        if name not in self._cache:
            valid = self.valid.get(name)
            if valid:
                ok = st.sampled_from(valid)
                self._cache[name] = st.one_of(ok, ok, _HOSTILE, _TEXT)
            else:
                self._cache[name] = _ANY_VALUE
        return self._cache[name]


def value(valid: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(valid), _HOSTILE, _TEXT) if valid else _ANY_VALUE


def mutated(
    bases: list[list[tuple[str, str]]],
    values: dict[str, list[str]] | Values,
    *,
    max_mutations: int = 4,
) -> st.SearchStrategy[list[tuple[str, str]]]:
    """One of the valid ``bases``, with up to ``max_mutations`` mutations."""
    values = values if isinstance(values, Values) else Values(values)
    base = st.sampled_from(bases)
    count = st.integers(0, max_mutations)

    @st.composite
    def build(draw) -> list[tuple[str, str]]:
        pairs = list(draw(base))
        for _ in range(draw(count)):
            kind = draw(_MUTATIONS)
            if kind == "add":
                name = draw(values.names)
                pairs.append((name, draw(values(name))))
                continue
            if not pairs:
                continue
            i = draw(st.integers(0, len(pairs) - 1))
            name, old = pairs[i]
            if kind == "drop":
                del pairs[i]
            elif kind == "replace":
                pairs[i] = (name, draw(_ANY_VALUE))
            elif kind == "valid":
                pairs[i] = (name, draw(values(name)))
            elif kind == "repeat":
                again = old if draw(st.booleans()) else draw(values(name))
                pairs.insert(draw(st.integers(0, len(pairs))), (name, again))
            else:  # rename
                pairs[i] = (draw(_HOSTILE_NAMES), old)
        return pairs

    return build()


def form_bytes(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode("ascii")


_ENCODINGS = st.sampled_from(
    ["form"] * 6
    + [
        "form; charset",
        "raw-utf8",
        "invalid-utf8",
        "percent-invalid-utf8",
        "json",
        "multipart",
        "text",
        "none",
        "octet",
        "bogus-type",
        "truncated",
        "nul-separated",
        "semicolons",
    ]
)
_CHARSETS = st.sampled_from(["utf-8", "UTF-8", "latin-1", "utf-16", "bogus", ""])
_JUNK = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
_JSON_TYPES = st.sampled_from(["application/json", FORM])
_BOUNDARIES = st.sampled_from(["b0undary", "", "x" * 80, "é"])
_BOGUS_TYPES = st.sampled_from(["application/x-www-form-urlencoded\x00", "x/y; ;;", "/", "é/é"])


def encode_body(draw, pairs: list[tuple[str, str]]) -> tuple[bytes, str | None]:
    """The body and its Content-Type ('': no Content-Type header at all)."""
    how = draw(_ENCODINGS)
    if how == "form":
        return form_bytes(pairs), FORM
    if how == "form; charset":
        return form_bytes(pairs), f"{FORM}; charset={draw(_CHARSETS)}"
    if how == "raw-utf8":  # unescaped non-ASCII, as a sloppy client sends it
        return "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8"), FORM
    if how == "invalid-utf8":
        body = form_bytes(pairs)
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(_JUNK) + body[at:], FORM
    if how == "percent-invalid-utf8":
        return form_bytes(pairs) + b"&" + quote(b"\xff\xfe").encode() + b"=%C3%28", FORM
    if how == "json":
        document = dict(pairs) if draw(st.booleans()) else [list(p) for p in pairs]
        return json.dumps(document).encode(), draw(_JSON_TYPES)
    if how == "multipart":
        boundary = draw(_BOUNDARIES)
        parts = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode(
                "utf-8", "replace"
            )
            for k, v in pairs
        )
        body = parts + f"--{boundary}--\r\n".encode("utf-8", "replace")
        return body, f"multipart/form-data; boundary={boundary}"
    if how == "text":
        return form_bytes(pairs), "text/plain"
    if how == "none":
        return form_bytes(pairs), ""
    if how == "octet":
        return form_bytes(pairs), "application/octet-stream"
    if how == "bogus-type":
        return form_bytes(pairs), draw(_BOGUS_TYPES)
    if how == "truncated":
        body = form_bytes(pairs)
        return body[: draw(st.integers(0, len(body)))], FORM
    if how == "nul-separated":
        return form_bytes(pairs).replace(b"&", b"\x00"), FORM
    return form_bytes(pairs).replace(b"&", b";"), FORM


def basic(user: str, password: str | None) -> str:
    raw = user if password is None else f"{user}:{password}"
    return "Basic " + base64.b64encode(raw.encode("utf-8")).decode()


def authorization_values(basic_ok: list[str], bearer_ok: list[str]) -> list[str]:
    """Authorization header values: valid ones, and every way of getting one wrong."""
    return [
        *basic_ok,
        *bearer_ok,
        "Basic",
        "Basic ",
        "Basic  ",
        " ",
        "Basic !!!",
        "Basic ====",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Basic " + base64.b64encode(b"a%ZZ:b%").decode(),
        "Basic " + base64.b64encode(b"\x00:\x00").decode(),
        "Basic éé",
        "Basic\tZm9vOmJhcg==",
        "basic Zm9vOmJhcg==",
        "Basic Zm9vOmJhcg== trailing",
        "Basic " + "A" * 70_000,
        "Bearer",
        "Bearer ",
        "Bearer  x",
        "Bearer x",
        "bearer x",
        "Bearer é",
        "Bearer " + "x" * 9_000,
        "Bearer a.b.c",
        "Bearer \x00",
        "Digest username=x",
        "Negotiate x",
        "x" * 100_000,
    ]


_ODD_HEADER_NAMES = st.sampled_from(
    [
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_USER_AGENT",
        "HTTP_ACCEPT",
        "HTTP_ACCEPT_LANGUAGE",
        "HTTP_COOKIE",
        "HTTP_X_REQUEST_ID",
        "HTTP_TRANSFER_ENCODING",
    ]
)
_ODD_HEADER_VALUES = st.sampled_from(
    ["", "\xff\xfe", "é" * 10, "x" * 65_536, "1.2.3.4, nonsense", "a=b; c", "\x00"]
)
_TENTHS = st.integers(0, 9)


def dpop_values(proofs: list[str]) -> list[str]:
    """DPoP header values (RFC 9449 §4): real proofs (used up after their first request, then
    replays), and every way of getting one wrong that is not about its signature."""
    header = base64.urlsafe_b64encode(b'{"typ":"dpop+jwt","alg":"ES256"}').rstrip(b"=").decode()
    return [
        *proofs,
        "",
        " ",
        ",",
        "a.b.c",
        "a.b",
        f"{proofs[0]},{proofs[0]}" if proofs else "x,y",
        f"{header}.e30.",
        f"{header}.{'A' * 5_000}.x",
        "eyJhbGciOiJub25lIn0.e30.",
        "é.é.é",
        "\x00",
        "x" * 70_000,
    ]


def headers(
    authorizations: list[str], origins: list[str], proofs: list[str] | None = None
) -> st.SearchStrategy[dict[str, str]]:
    """WSGI environ headers: Authorization (eight times in ten), a DPoP proof (three in ten,
    when ``proofs`` is given), now and then an Origin and an odd extra header (values are
    latin-1 text, as WSGI servers pass them)."""
    authorization = st.sampled_from(authorizations)
    origin = st.sampled_from([*origins, "null", "https://evil.example"])
    proof = st.sampled_from(dpop_values(proofs)) if proofs is not None else None

    @st.composite
    def build(draw) -> dict[str, str]:
        result: dict[str, str] = {}
        if draw(_TENTHS) < 8:
            result["HTTP_AUTHORIZATION"] = draw(authorization)
        if proof is not None and draw(_TENTHS) < 3:
            result["HTTP_DPOP"] = draw(proof)
        if draw(_TENTHS) == 0:
            result["HTTP_ORIGIN"] = draw(origin)
        if draw(_TENTHS) == 0:
            result[draw(_ODD_HEADER_NAMES)] = draw(_ODD_HEADER_VALUES)
        return result

    return build()


_QUERY_FORMS = st.sampled_from(["encoded", "encoded", "encoded", "raw", "invalid", "semicolons"])


def encode_query(draw, pairs: list[tuple[str, str]]) -> str:
    """A raw QUERY_STRING as a WSGI server hands it over (latin-1 decoded bytes)."""
    how = draw(_QUERY_FORMS)
    if how == "encoded":
        return urlencode(pairs)
    if how == "raw":  # unescaped UTF-8 bytes
        return "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8").decode("latin-1")
    if how == "invalid":
        return urlencode(pairs) + "&state=\xff\xfe&%FF=%C3%28"
    return urlencode(pairs).replace("&", ";")


def request(
    method: str, path: str, body: tuple[bytes, str | None], hdrs: dict, *, secure=True, query=""
) -> Sent:
    data, content_type = body
    hdrs = dict(hdrs)
    if content_type == "":
        hdrs["CONTENT_TYPE"] = ""  # no Content-Type header at all
        content_type = None
    return Sent(method, path, query, data, content_type, hdrs, secure)


_STRAY_QUERIES = st.sampled_from(
    [""] * 9 + ["grant_type=client_credentials", "token=x", "%FF=\xff", "a", "client_secret=s"]
)
_TWENTIETHS = st.integers(0, 19)


def requests(
    path: str | st.SearchStrategy[str],
    methods: list[str],
    parameters: st.SearchStrategy[list[tuple[str, str]]],
    header_values: st.SearchStrategy[dict[str, str]] | None = None,
    *,
    query_parameters: st.SearchStrategy[list[tuple[str, str]]] | None = None,
    plain_http: bool = True,
) -> st.SearchStrategy[Sent]:
    """Whole requests to ``path``: the parameters in the query string for GET and HEAD, else in
    an encoded body (plus, now and then, a stray query string); ``query_parameters`` puts a
    query string on every request. One in twenty over plain http when ``plain_http``."""
    paths = path if isinstance(path, st.SearchStrategy) else st.just(path)
    method_choice = st.sampled_from(methods)

    @st.composite
    def build(draw) -> Sent:
        method = draw(method_choice)
        pairs = draw(parameters)
        hdrs = draw(header_values) if header_values is not None else {}
        if method in ("GET", "HEAD"):
            body, query = (b"", None), encode_query(draw, pairs)
        else:
            body = encode_body(draw, pairs)
            query = draw(_STRAY_QUERIES) if query_parameters is None else ""
        if query_parameters is not None:
            query = encode_query(draw, draw(query_parameters))
        secure = not plain_http or draw(_TWENTIETHS) != 0
        return request(method, draw(paths), body, hdrs, secure=secure, query=query)

    return build()
