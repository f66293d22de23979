"""Django settings. Values come from the environment through ``authserver.env`` and nowhere else."""

from django.core.exceptions import ImproperlyConfigured

from authserver import env
from authserver.logs import logging_config

try:
    CONFIG = env.load()
except ImproperlyConfigured as problems:
    # One clear message listing everything to fix, not a traceback.
    raise SystemExit(f"\n{problems}\n") from None
BASE_DIR = env.BASE_DIR

# --- Core -------------------------------------------------------------------------------------
DEBUG = CONFIG.debug
SECRET_KEY = CONFIG.secret_key
# Previous keys, while rotating: signatures and client secrets made with them still verify.
SECRET_KEY_FALLBACKS = CONFIG.secret_key_fallbacks
ALLOWED_HOSTS = CONFIG.allowed_hosts
ISSUER = CONFIG.issuer
DATA_DIR = CONFIG.data_dir
if DEBUG:
    # The quick start keeps its SQLite database, broker queue and beat schedule here.
    DATA_DIR.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "accounts",
    "tokens",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
]

# --- Middleware -------------------------------------------------------------------------------
# Two stacks, one list each; authserver.middleware.ProtocolRouter sits between them. Every
# request runs PROTOCOL_MIDDLEWARE. The protocol endpoints (PROTOCOL_URL_NAMES: machine to
# machine, no cookie, session, CSRF token or page) run nothing else; every other request goes on
# through BROWSER_MIDDLEWARE. Add a middleware to one of the two lists, never to MIDDLEWARE
# itself: start-up refuses a MIDDLEWARE that is not exactly the two lists around the router
# (tests/test_middleware.py runs every route of the URLconf and checks which stack it got).
PROTOCOL_MIDDLEWARE = [
    "authserver.logs.RequestIdMiddleware",
    "authserver.logs.AccessLogMiddleware",  # inside the request id: its line carries it
    "authserver.metrics.MetricsMiddleware",
    "authserver.health.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",  # HSTS, nosniff, HTTPS redirect
]
BROWSER_MIDDLEWARE = [
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "authserver.middleware.SecurityHeadersMiddleware",
]
MIDDLEWARE = [*PROTOCOL_MIDDLEWARE, "authserver.middleware.ProtocolRouter", *BROWSER_MIDDLEWARE]
# Routes without arguments whose views need no browser middleware (see above).
PROTOCOL_URL_NAMES = (
    "tokens:token",
    "tokens:introspect",
    "tokens:revoke",
    "tokens:par",
    "tokens:device_authorization",
    "tokens:userinfo",
    "tokens:jwks",
    "tokens:openid_configuration",
    "tokens:oauth_metadata",
)

ROOT_URLCONF = "authserver.urls"
WSGI_APPLICATION = "authserver.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": CONFIG.database}

# --- Cache ------------------------------------------------------------------------------------
CACHES = {"default": CONFIG.cache}

# --- People, passwords, sessions --------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.UsernameOrEmailBackend"]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = CONFIG.password_reset_timeout
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"
LOGOUT_REDIRECT_URL = None

# Browser sessions are rows of accounts.UserSession, read through the cache (accounts/sessions.py).
SESSION_ENGINE = "accounts.sessions"
SESSION_CACHE_ALIAS = "default"
SESSION_COOKIE_AGE = CONFIG.session_max_age
SESSION_COOKIE_NAME = "authserver_session"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
SESSION_RETENTION_DAYS = CONFIG.session_retention_days
# last_seen is written at most this often per session, not on every request.
SESSION_TOUCH_INTERVAL = 60

# Login throttling (accounts/throttle.py): failures per account and per client IP.
LOGIN_FAILURE_LIMIT = CONFIG.login_failure_limit
LOGIN_FAILURE_LIMIT_PER_IP = CONFIG.login_failure_limit_per_ip
LOGIN_FAILURE_WINDOW = CONFIG.login_failure_window
# Client IP: REMOTE_ADDR, or the Nth address from the right of X-Forwarded-For behind N proxies.
TRUSTED_PROXY_COUNT = CONFIG.trusted_proxy_count

# --- OAuth 2.0 and OpenID Connect ------------------------------------------------------------
# Scopes the server knows, with the words the consent page shows for each.
OAUTH_SCOPES = {
    "openid": "Sign you in with your account",
    "profile": "See your name and username",
    "email": "See your email address",
    "offline_access": "Stay connected when you are not using it",
    **CONFIG.extra_scopes,
}
ACCESS_TOKEN_AUDIENCE = CONFIG.access_token_audience
ACCESS_TOKEN_SIGNING_ALG = CONFIG.access_token_signing_alg
AUTHORIZATION_CODE_LIFETIME = CONFIG.authorization_code_lifetime
CONSENT_LIFETIME_DAYS = CONFIG.consent_lifetime_days
# Refresh retry window (tokens/refresh_tokens.py): seconds after a rotation during which the same
# confidential client presenting the rotated token again gets the same successor back; a client's
# own refresh_retry_window overrides it; 0 turns it off.
REFRESH_RETRY_WINDOW = CONFIG.refresh_retry_window
# Introspection and userinfo (tokens/liveness.py): seconds at most a process answers "live" for
# an access token from memory; any revocation anywhere forgets every answer at once. 0: always
# ask the rows.
ACCESS_TOKEN_LIVENESS_CACHE = CONFIG.access_token_liveness_cache
ID_TOKEN_LIFETIME = CONFIG.id_token_lifetime
LOGOUT_TOKEN_LIFETIME = 120
# Key life cycle (tokens/keys.py): a key is published a day before it signs, signs for
# SIGNING_KEY_ROTATE_AFTER, then stays published until everything it signed has expired.
SIGNING_KEY_ROTATE_AFTER = CONFIG.signing_key_rotate_after_days * 86_400
SIGNING_KEY_PUBLISH_AHEAD = 86_400
# Dynamic client registration (RFC 7591): closed unless OPEN_REGISTRATION; otherwise an initial
# access token from admin or `manage.py create_initial_access_token` is required.
OPEN_REGISTRATION = CONFIG.open_registration
# RFC 7592 §3: the registration access token is replaced on update (default), never, or on every
# use of the configuration endpoint. The one replaced keeps working this many seconds: long
# enough to retry a request whose response was lost, short enough that a leaked old token dies.
REGISTRATION_TOKEN_ROTATION = CONFIG.registration_token_rotation
REGISTRATION_TOKEN_OVERLAP = 60
# Pushed authorization requests (RFC 9126, tokens/pushed_requests.py): a request_uri lives this
# many seconds until a browser presents it; that browser then has PUSHED_AUTHORIZATION_SIGN_IN_TIME
# to sign in and consent. REQUIRE_PUSHED_AUTHORIZATION_REQUESTS: every client must push (§5).
PUSHED_AUTHORIZATION_REQUEST_LIFETIME = CONFIG.pushed_authorization_request_lifetime
PUSHED_AUTHORIZATION_SIGN_IN_TIME = 600
REQUIRE_PUSHED_AUTHORIZATION_REQUESTS = CONFIG.require_pushed_authorization_requests
# Device authorization grant (RFC 8628, tokens/device_codes.py): how long a device code and its
# user code live, and the polling interval a device starts with (+5 s per slow_down, §3.5).
# Entering user codes at /device is limited per person and per IP in each LOGIN_FAILURE_WINDOW.
DEVICE_CODE_LIFETIME = CONFIG.device_code_lifetime
DEVICE_CODE_INTERVAL = CONFIG.device_code_interval
DEVICE_CODE_ENTRY_LIMIT = 10
DEVICE_CODE_ENTRY_LIMIT_PER_IP = 50
# Back-channel logout POSTs go to URLs that clients registered: never into private networks,
# unless this is on (tests, or every relying party lives inside the network).
BACKCHANNEL_LOGOUT_ALLOW_PRIVATE_NETWORKS = CONFIG.backchannel_logout_allow_private_networks
BACKCHANNEL_LOGOUT_TIMEOUT = 5
# DPoP (RFC 9449, tokens/dpop.py): a proof's iat may be this many seconds off the clock either
# way; its jti is remembered (shared cache) that long. With DPOP_NONCE on, proofs must carry a
# server nonce (§8, §9): an HMAC of the current DPOP_NONCE_LIFETIME window, so no storage.
DPOP_IAT_WINDOW = CONFIG.dpop_iat_window
DPOP_NONCE = CONFIG.dpop_nonce
DPOP_NONCE_LIFETIME = CONFIG.dpop_nonce_lifetime
# A client's jwks_uri and request_uri (tokens/client_keys.py, tokens/oauth/request_objects.py)
# are fetched through the same SSRF guard, with a short timeout and a size limit.
CLIENT_FETCH_ALLOW_PRIVATE_NETWORKS = CONFIG.client_fetch_allow_private_networks
CLIENT_FETCH_TIMEOUT = 3
CLIENT_FETCH_MAX_BYTES = 65_536
# A fetched client JWKS is kept this long in the shared cache; a kid it lacks refetches it at
# most once per CLIENT_JWKS_REFETCH_SECONDS (an RP rotating its key, RFC 7523 §3 / OIDC Core §10.1).
CLIENT_JWKS_CACHE_SECONDS = 300
CLIENT_JWKS_REFETCH_SECONDS = 10
# private_key_jwt (RFC 7523 §3): the furthest in the future an assertion may expire, and the
# clock skew allowed on exp, iat and nbf. An hour: what Authlib's client signs by default (and
# Okta's limit); each jti is single use anyway, and is remembered until its assertion expires.
CLIENT_ASSERTION_MAX_LIFETIME = 3600
CLIENT_ASSERTION_LEEWAY = 30
# Empty: resource servers here check tokens against this server's keys and revocation state.
# Another deployment sets the JWKS URL and checks signatures offline.
RESOURCE_SERVER_JWKS_URL = ""
# The public base URL of the resource server's own endpoints, which DPoP proofs name in htu
# (RFC 9449 §4.3); empty: ISSUER (the resources of this deployment, userinfo among them).
RESOURCE_SERVER_URL = ""
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tokens.oauth.resource.BearerTokenAuthentication"],
    # Secure by default: a DRF view needs a valid token carrying its ``required_scopes``.
    "DEFAULT_PERMISSION_CLASSES": ["tokens.oauth.resource.HasScope"],
}
# Largest form body a protocol endpoint reads, and longest single parameter value.
OAUTH_MAX_BODY_BYTES = 16_384
OAUTH_MAX_PARAMETER_LENGTH = 4_096

# --- Operations -------------------------------------------------------------------------------
# /metrics answers only these networks (the scraper as this process sees it) or a bearer token.
METRICS_ALLOWED_NETWORKS = CONFIG.metrics_allowed_networks
METRICS_TOKEN = CONFIG.metrics_token

# --- Security headers -------------------------------------------------------------------------
CSRF_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "accounts.views.csrf_failure"
CSRF_TRUSTED_ORIGINS = [ISSUER] if ISSUER else []
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_HSTS_SECONDS = CONFIG.hsts_seconds
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if CONFIG.secure_proxy_ssl_header else None
)
# authserver/middleware.py: a strict policy; no inline script or style anywhere in templates.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# --- Static files -----------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = CONFIG.static_root  # where collectstatic writes and the server reads them
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
        # With DEBUG off, run `manage.py collectstatic` first (the Dockerfile and tests do).
    },
}
WHITENOISE_USE_FINDERS = True

# --- Email ------------------------------------------------------------------------------------
globals().update(CONFIG.email)
DEFAULT_FROM_EMAIL = CONFIG.default_from_email
# Emails that must not reveal anything by their timing (password reset) go through Celery.
EMAIL_ASYNC = True
SERVER_EMAIL = CONFIG.default_from_email

# --- Internationalisation ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging ----------------------------------------------------------------------------------
# One line per request from authserver.logs.AccessLogMiddleware (the server writes none).
ACCESS_LOG = CONFIG.access_log
LOGGING = {
    **logging_config(json=CONFIG.log_json, level=CONFIG.log_level),
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = CONFIG.broker_url
CELERY_BROKER_TRANSPORT_OPTIONS = CONFIG.broker_transport_options
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"
# The beat schedule is in authserver/celery.py, next to the app.
