"""/device: where a person signs a device in (RFC 8628 §3.3). Signed in through the usual page,
they type the code the device shows (or arrive with it in the link), then confirm on a page
that names the application and what it asks for, and asks whether they are signing in a device
of their own: a code someone else sent them is the device-code phishing of RFC 8628 §5.4."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from accounts import assurance, throttle
from accounts.network import client_ip
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY, SID_KEY
from tokens import device_codes
from tokens.views import factor_step, reachable_level


@login_required
@never_cache
@sensitive_post_parameters("user_code")
@require_http_methods(["GET", "POST"])
def device(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        # §3.3.1 verification_uri_complete: the code is filled in, never submitted for them.
        return _code_page(request, request.GET.get("user_code", "")[:20])
    typed = request.POST.get("user_code", "")
    if not _may_try(request):
        return _code_page(
            request, typed, "Too many codes tried. Wait a few minutes and try again.", status=429
        )
    row = device_codes.pending(typed)
    if row is None:
        return _code_page(
            request, typed, "That code is not valid, or it has expired. Check it on the device."
        )
    _gave_the_right_code(request)
    decision = request.POST.get("decision")
    amr = request.session.get(AMR_KEY, [])
    wanted = assurance.requested(
        None,
        None,
        default_acr_values=row.client.default_acr_values,
        required_acr=row.client.required_acr,
    )
    if decision != "deny" and not wanted.met_by(amr):
        if step_up := _step_up(request, row, typed, wanted):
            return step_up
    if decision not in ("allow", "deny"):
        return _confirmation_page(request, row, typed)
    if decision == "allow":
        auth_time = request.session.get(AUTH_TIME_KEY)
        decided = device_codes.decide(
            row,
            user=request.user,
            sid=request.session.get(SID_KEY, ""),
            auth_time=datetime.fromtimestamp(auth_time, UTC) if auth_time else None,
            acr=wanted.chosen(amr) or "",
            amr=amr,
        )
    else:
        decided = device_codes.decide(row, user=None)
    if not decided:
        return _code_page(request, "", "That code has just been used or has expired.")
    return render(
        request, "tokens/device_done.html", {"client": row.client, "allowed": decision == "allow"}
    )


def _step_up(request: HttpRequest, row, typed: str, wanted) -> HttpResponse | None:
    """The client asks for a stronger sign-in than this session's (its ``default_acr_values``
    or ``required_acr``; RFC 8628 has no ``acr_values``): off to the missing factor, back here
    with the code filled in. A level the person cannot reach is a refusal when the client
    requires it, and the best reached otherwise (as at /authorize: tokens/views.py)."""
    reachable = reachable_level(request.user, wanted)
    if reachable is not None:
        return factor_step(
            reachable, f"{reverse('tokens:device')}?{urlencode({'user_code': typed})}"
        )
    if not wanted.essential:
        return None
    return _code_page(
        request,
        "",
        f"{row.client.name} requires a stronger sign-in than this account can make. Add a "
        "second factor (an authenticator app or a passkey) under Security, then try again.",
        status=403,
    )


def _throttled(request: HttpRequest) -> list[tuple[str, str, int]]:
    counters = [("device-user", str(request.user.pk), settings.DEVICE_CODE_ENTRY_LIMIT)]
    if ip := client_ip(request):
        counters.append(("device-ip", ip, settings.DEVICE_CODE_ENTRY_LIMIT_PER_IP))
    return counters


def _may_try(request: HttpRequest) -> bool:
    """Every submission reserves a try, per person and per IP, before any code is looked up
    (the sign-in throttle's race-free counters), so parallel guesses get no more through."""
    allowed = True
    for kind, subject, limit in _throttled(request):
        allowed = throttle.reserve(kind, subject, limit) and allowed
    return allowed


def _gave_the_right_code(request: HttpRequest) -> None:
    for kind, subject, _limit in _throttled(request):
        throttle.give_back(kind, subject)


def _code_page(request, typed: str, error: str = "", status: int = 200) -> HttpResponse:
    return render(
        request,
        "tokens/device.html",
        {"user_code": typed, "error": error},
        status=400 if error and status == 200 else status,
    )


def _confirmation_page(request, row, typed: str) -> HttpResponse:
    scopes = [
        (scope, settings.OAUTH_SCOPES.get(scope, scope)) for scope in (row.scope or "").split()
    ]
    letters = device_codes.normalize_user_code(typed) or ""
    return render(
        request,
        "tokens/device_confirm.html",
        {
            "client": row.client,
            "scopes": scopes,
            "user_code": device_codes.format_user_code(letters),
        },
    )
