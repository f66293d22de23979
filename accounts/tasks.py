from accounts.expiry import SESSIONS
from authserver.janitor import make_task

expire_sessions = make_task(SESSIONS)
