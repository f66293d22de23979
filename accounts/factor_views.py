"""Pages for second factors: the sign-in step after the password (and the step-up an
application asks for), the account's factors, TOTP enrolment and recovery codes."""

from __future__ import annotations

import json
import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts import assurance, factors, passkeys, services, throttle
from accounts.forms import FactorCodeForm
from accounts.models import Passkey, SecurityEvent, User, UserSession
from accounts.network import client_ip
from accounts.sessions import AMR_KEY, AUTH_TIME_KEY
from authserver.metrics import LOGIN_FAILURES, LOGIN_THROTTLED
from tokens import revocation
from tokens.csp import authorization_redirect_origin, form_action_policy

ENROLLING_KEY = "_totp_enrolling"
THROTTLED = "Too many wrong codes. Please wait a while before trying again."
WRONG_CODE = "That code is not right, or it was used already. Try the next one."


def safe_next(request: HttpRequest, url: str | None) -> str:
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def _with_form_action(response: HttpResponse, next_url: str) -> HttpResponse:
    # As on the sign-in page: passing this step may end on the client's redirect URI.
    if origin := authorization_redirect_origin(next_url):
        response["Content-Security-Policy"] = form_action_policy(origin)
    return response


def complete_sign_in(
    request: HttpRequest, user: User, amr: list[str], *, backend: str | None = None
) -> None:
    """Sign ``user`` in (or raise the current sign-in) with the methods ``amr`` (RFC 8176)."""
    current = request.user
    if current.is_authenticated and current.pk == user.pk and backend is None:
        # Step-up: the same person adds a factor. A new session key, as for any change of
        # privilege (fixation), and the methods are added to the ones already used.
        request.session.cycle_key()
        request.session[AMR_KEY] = assurance.combine(request.session.get(AMR_KEY, []), *amr)
        request.session[AUTH_TIME_KEY] = int(time.time())
        return
    if current.is_authenticated and current.pk != user.pk:
        revocation.end_sessions(
            UserSession.objects.filter(session_key=request.session.stored_key or ""),
            by=UserSession.EndedBy.PERSON,
            reason="another account signed in",
            request=request,
        )
    factors.end_pending_sign_in(request)
    auth_login(request, user, backend=backend or settings.AUTHENTICATION_BACKENDS[0])
    request.session[AMR_KEY] = assurance.combine([], *amr)


def check_code(request: HttpRequest, user: User, code: str) -> tuple[str | None, str]:
    """(``"otp"``, "") for a good code, else (None, why), throttled like passwords."""
    attempt = throttle.begin(
        user.get_username(), client_ip(request), account_id=user.pk, factor="otp"
    )
    if not attempt.allowed:
        LOGIN_THROTTLED.inc()
        return None, THROTTLED
    method = factors.verify_code(user, code, request=request)
    if method:
        throttle.succeeded(attempt)
        return method, ""
    locked = throttle.failed(attempt)
    LOGIN_FAILURES.inc()
    services.record_event(SecurityEvent.Kind.FACTOR_FAILED, request=request, user=user)
    if locked:
        services.record_event(
            SecurityEvent.Kind.LOCKOUT,
            request=request,
            user=user,
            actor=SecurityEvent.Actor.SYSTEM,
            locked=locked,
            factor="otp",
        )
    return None, WRONG_CODE


def factor_subject(request: HttpRequest) -> tuple[User, dict | None] | None:
    """Who this step is for: the person whose password was just right (pending), or the person
    signed in who is asked for more (step-up)."""
    if pending := factors.pending_sign_in(request):
        return pending
    if request.user.is_authenticated:
        return request.user, None
    return None


@never_cache
@sensitive_post_parameters("code")
def login_factor(request: HttpRequest) -> HttpResponse:
    """The second step of signing in, and the step-up page (``acr`` names the level needed)."""
    subject = factor_subject(request)
    if subject is None:
        return redirect(
            f"{reverse('accounts:login')}?{urlencode({'next': request.GET.get('next', '')})}"
        )
    user, pending = subject
    next_url = pending["next"] if pending else safe_next(request, request.GET.get("next"))
    wanted = request.GET.get("acr", "")
    if not pending and wanted and assurance.satisfies(request.session.get(AMR_KEY, []), wanted):
        return redirect(next_url or "accounts:home")  # reached meanwhile (e.g. by enrolling)
    form = FactorCodeForm(request.POST or None)
    codes_do = wanted != assurance.PHR  # a code is never phishing-resistant
    if request.method == "POST" and codes_do and form.is_valid():
        method, problem = check_code(request, user, form.cleaned_data["code"])
        if method:
            complete_sign_in(request, user, ["pwd", method] if pending else [method],
                             backend=pending["backend"] if pending else None)  # fmt: skip
            return redirect(next_url or "accounts:home")
        form.add_error(None, problem)
    context = {
        "form": form,
        "stepping_up": pending is None,
        "codes_do": codes_do,
        "has_totp": factors.has_totp(user),
        "recovery_left": factors.recovery_codes_left(user),
        "has_passkeys": Passkey.objects.filter(user=user).exists(),
        "can_reach": factors.can_reach(user, wanted or assurance.MFA),
        "next": next_url,
        "wanted": wanted,
    }
    return _with_form_action(render(request, "accounts/login_factor.html", context), next_url)


@login_required
@never_cache
def factor_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    context = {
        "has_totp": factors.has_totp(user),
        "recovery_left": factors.recovery_codes_left(user),
        "passkeys": Passkey.objects.filter(user=user).order_by("created"),
    }
    return render(request, "accounts/factors.html", context)


def _needs_step_up(request: HttpRequest) -> HttpResponse | None:
    """Removing or replacing a factor needs a sign-in that used one, when the person has one:
    whoever holds only the password (or a stolen session of it) cannot take factors away."""
    if not factors.has_second_factor(request.user):
        return None
    if assurance.satisfies(request.session.get(AMR_KEY, []), assurance.MFA):
        return None
    query = urlencode({"next": reverse("accounts:factors"), "acr": assurance.MFA})
    return redirect(f"{reverse('accounts:login_factor')}?{query}")


@login_required
@never_cache
@sensitive_post_parameters("code")
def totp_enrol(request: HttpRequest) -> HttpResponse:
    """RFC 6238 enrolment: a new secret (QR code and text), confirmed by a first valid code."""
    if stop := _needs_step_up(request):
        return stop
    user = request.user
    next_url = safe_next(request, request.GET.get("next"))
    form = FactorCodeForm(request.POST or None)
    device_id = request.session.get(ENROLLING_KEY)
    if request.method == "POST" and device_id and form.is_valid():
        if factors.confirm_totp(user, device_id, form.cleaned_data["code"], request=request):
            request.session.pop(ENROLLING_KEY, None)
            # The first code proves the person holds the app now: this sign-in used it.
            complete_sign_in(request, user, ["otp"])
            codes = (
                factors.new_recovery_codes(user) if not factors.recovery_codes_left(user) else []
            )
            messages.success(request, "Your authenticator app is set up.")
            if codes:
                return _recovery_codes_page(request, codes, next_url)
            return redirect(next_url or "accounts:factors")
        form.add_error(None, WRONG_CODE)
    device = factors.pending_device(user, device_id) if request.method == "POST" else None
    if device is None:
        device, secret = factors.start_totp_enrolment(user)
        request.session[ENROLLING_KEY] = device.pk
        form = FactorCodeForm() if request.method == "GET" else form
    else:
        secret = factors.pending_secret(device)
    uri = factors.provisioning_uri(user, secret)
    context = {
        "form": form,
        "qr": factors.qr_svg(uri),
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "next": next_url,
    }
    return render(request, "accounts/totp_enrol.html", context)


def _recovery_codes_page(request: HttpRequest, codes: list[str], next_url: str) -> HttpResponse:
    response = render(request, "accounts/recovery_codes.html", {"codes": codes, "next": next_url})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def totp_remove(request: HttpRequest) -> HttpResponse:
    if stop := _needs_step_up(request):
        return stop
    if factors.remove_totp(request.user, request=request):
        messages.success(request, "Your authenticator app is removed.")
    return redirect("accounts:factors")


@require_POST
@login_required
def recovery_codes(request: HttpRequest) -> HttpResponse:
    """New recovery codes (the old ones stop working), shown once."""
    if stop := _needs_step_up(request):
        return stop
    return _recovery_codes_page(request, factors.new_recovery_codes(request.user), "")


# --- passkeys (JSON for static/js/passkeys.js) ------------------------------------------------
def _json(request: HttpRequest) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _options(payload: str) -> HttpResponse:
    response = HttpResponse(payload, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def _refused(message: str, status: int = 400, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _step_up_json(request: HttpRequest) -> JsonResponse | None:
    if stop := _needs_step_up(request):
        return _refused("Confirm with your second factor first.", 403, location=stop["Location"])
    return None


@require_POST
@login_required
def passkey_register_options(request: HttpRequest) -> HttpResponse:
    if stop := _step_up_json(request):
        return stop
    return _options(passkeys.registration_options(request, request.user))


@require_POST
@login_required
def passkey_register(request: HttpRequest) -> HttpResponse:
    if stop := _step_up_json(request):
        return stop
    body = _json(request)
    if not isinstance(body.get("credential"), dict):
        return _refused("No passkey was sent.")
    try:
        passkey = passkeys.register(
            request, request.user, body["credential"], str(body.get("name", ""))
        )
    except passkeys.PasskeyError as error:
        return _refused(str(error))
    messages.success(request, f"Passkey “{passkey.name}” added.")
    return JsonResponse({"location": reverse("accounts:factors")})


@require_POST
@login_required
def passkey_remove(request: HttpRequest, passkey_id: str) -> HttpResponse:
    if stop := _needs_step_up(request):
        return stop
    if passkeys.remove(request, request.user, passkey_id):
        messages.success(request, "The passkey is removed.")
    return redirect("accounts:factors")


@require_POST
def passkey_login_options(request: HttpRequest) -> HttpResponse:
    """A passwordless sign-in (and the login page's autofill): any discoverable passkey."""
    return _options(passkeys.authentication_options(request, None))


@require_POST
def passkey_login(request: HttpRequest) -> HttpResponse:
    body = _json(request)
    try:
        assertion = passkeys.authenticate(request, body.get("credential"), None)
    except passkeys.PasskeyError as error:
        return _refused(str(error))
    complete_sign_in(
        request, assertion.user, assertion.amr, backend=settings.AUTHENTICATION_BACKENDS[0]
    )
    next_url = safe_next(request, body.get("next") if isinstance(body.get("next"), str) else "")
    return JsonResponse({"location": next_url or reverse("accounts:home")})


@require_POST
def passkey_verify_options(request: HttpRequest) -> HttpResponse:
    """A passkey as the second factor (or step-up) of the person at the factor step."""
    subject = factor_subject(request)
    if subject is None:
        return _refused("Sign in first.", 403)
    return _options(passkeys.authentication_options(request, subject[0]))


@require_POST
def passkey_verify(request: HttpRequest) -> HttpResponse:
    subject = factor_subject(request)
    if subject is None:
        return _refused("Sign in first.", 403)
    user, pending = subject
    body = _json(request)
    try:
        assertion = passkeys.authenticate(request, body.get("credential"), user)
    except passkeys.PasskeyError as error:
        services.record_event(
            SecurityEvent.Kind.FACTOR_FAILED, request=request, user=user, factor="passkey"
        )
        return _refused(str(error))
    if pending:
        complete_sign_in(request, user, ["pwd", *assertion.amr], backend=pending["backend"])
        next_url = pending["next"]
    else:
        complete_sign_in(request, user, assertion.amr)
        next_url = safe_next(request, body.get("next") if isinstance(body.get("next"), str) else "")
    return JsonResponse({"location": next_url or reverse("accounts:home")})
