from accounts.expiry import LOGIN_COUNTERS, SESSIONS
from authserver.janitor import make_task

expire_sessions = make_task(SESSIONS)
expire_login_counters = make_task(LOGIN_COUNTERS)
