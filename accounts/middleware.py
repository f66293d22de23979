from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware, telling the store where each request comes from and
    recording activity on signed-in sessions (throttled to about once a minute)."""

    def process_request(self, request) -> None:
        super().process_request(request)
        request.session.bind_request(request)

    def process_response(self, request, response):
        session = getattr(request, "session", None)
        if (
            session is not None
            and session.accessed
            and session.session_key
            and SESSION_KEY in session
        ):
            session.touch()
        return super().process_response(request, response)
