"""Browser pages: sign in and out, password reset and change, the account's sessions."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import factors
from accounts.forms import LoginForm, PasswordResetForm
from accounts.models import UserSession
from tokens import revocation
from tokens.csp import authorization_redirect_origin, form_action_policy


class LoginView(auth_views.LoginView):
    """Sign-in. With ``reauth=1`` (OIDC prompt=login, max_age) it asks again even when signed
    in; ``login_hint`` fills in the name."""

    form_class = LoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        self.reauthenticating = request.GET.get("reauth") == "1" and request.user.is_authenticated
        if self.reauthenticating or request.method == "POST":
            # A submitted password is always checked, never waved through as "signed in".
            self.redirect_authenticated_user = False
        return super().dispatch(request, *args, **kwargs)

    def get_initial(self):
        hint = self.request.GET.get("login_hint", "")[:254]
        if not hint and self.reauthenticating:
            hint = self.request.user.get_username()
        return {"username": hint} if hint else {}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "reauthenticating": self.reauthenticating}

    def form_valid(self, form):
        if factors.has_second_factor(form.get_user()):
            # Not signed in yet: the session only remembers, briefly, whose password was right.
            factors.begin_pending_sign_in(self.request, form.get_user(), self.get_redirect_url())
            return redirect("accounts:login_factor")
        current = self.request.user
        if current.is_authenticated and current.pk != form.get_user().pk:
            # Someone else signs in on this browser: the previous login ends properly (tokens,
            # back-channel logout), not just by Django flushing the session.
            revocation.end_sessions(
                UserSession.objects.filter(session_key=self.request.session.stored_key or ""),
                by=UserSession.EndedBy.PERSON,
                reason="another account signed in",
                request=self.request,
            )
        return super().form_valid(form)

    def render_to_response(self, context, **response_kwargs):
        response = super().render_to_response(context, **response_kwargs)
        # Signing in to continue an authorization request can end on the client (/authorize
        # answers at once when consent is skipped or remembered), and browsers hold every
        # redirect that follows this form's submission to CSP form-action.
        if origin := authorization_redirect_origin(self.get_redirect_url()):
            response["Content-Security-Policy"] = form_action_policy(origin)
        return response


class LogoutView(View):
    """GET asks for confirmation; only a POST (with its CSRF token) signs out."""

    template_name = "accounts/logout_confirm.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return render(request, "accounts/logged_out.html")
        return render(request, self.template_name)

    def post(self, request: HttpRequest) -> HttpResponse:
        revocation.sign_out(request)
        return render(request, "accounts/logged_out.html")


@login_required
@never_cache
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/home.html")


@login_required
@never_cache
def session_list(request: HttpRequest) -> HttpResponse:
    sessions = UserSession.objects.active().filter(user=request.user).order_by("-last_seen")
    current = request.session.stored_key
    return render(
        request,
        "accounts/sessions.html",
        {"sessions": sessions, "current_key": current, "now": timezone.now()},
    )


@require_POST
@login_required
def end_session(request: HttpRequest, sid: str) -> HttpResponse:
    if sid == request.session.get("_sid"):
        revocation.sign_out(request)
        return render(request, "accounts/logged_out.html")
    if revocation.end_session_by_sid(request.user, sid, request=request):
        messages.success(request, "The session has ended. That device is signed out.")
    else:
        messages.info(request, "That session had already ended.")
    return redirect("accounts:sessions")


@require_POST
@login_required
def end_other_sessions(request: HttpRequest) -> HttpResponse:
    count = revocation.end_other_sessions(request.user, request, reason="ended all other sessions")
    messages.success(request, f"Signed out of {count} other session{'' if count == 1 else 's'}.")
    return redirect("accounts:sessions")


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("accounts:sessions")

    def form_valid(self, form):
        user = form.save()
        # Keeps this browser signed in (and gives its session a new key) ...
        update_session_auth_hash(self.request, user)
        # ... and signs every other browser out: whoever else had the old password is gone.
        count = revocation.password_changed(user, self.request)
        messages.success(
            self.request,
            "Your password has been changed."
            + (f" {count} other session{'' if count == 1 else 's'} signed out." if count else ""),
        )
        return redirect(self.get_success_url())


class PasswordResetView(auth_views.PasswordResetView):
    form_class = PasswordResetForm
    template_name = "accounts/password_reset_form.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")

    @property
    def extra_email_context(self):
        # The link is built from ISSUER, never from the request's Host header.
        minutes = settings.PASSWORD_RESET_TIMEOUT // 60
        return {"base_url": settings.ISSUER, "expiry_text": f"{minutes} minutes"}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password_reset_complete")
    post_reset_login = False

    def form_valid(self, form):
        response = super().form_valid(form)
        user = form.user
        revocation.password_reset(user, self.request)
        return response


password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="accounts/password_reset_done.html"
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="accounts/password_reset_complete.html"
)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A friendly page instead of Django's technical one; the reason is for logs, not people."""
    return render(request, "403_csrf.html", status=403)
