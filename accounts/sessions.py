"""SESSION_ENGINE: browser sessions as ``accounts.UserSession`` rows, read through the cache.

This is Django's ``cached_db`` store pointed at our model, with five changes:

* the cookie value is a bearer secret, so it is stored (row and cache key) only as its SHA-256,
  like any other token here: a copy of the table or of Redis signs nobody in;
* the row carries who is signed in, since when, from where (``create_model_instance``);
* an update never brings an ended session back: it only touches a row that is not revoked;
* ending a signed-in session marks its row revoked instead of deleting it, so the person and the
  operators keep its history until the purge job removes it;
* ``cycle_key`` on a signed-in session (a password change) moves the row to a new key instead of
  copying it, so its ``sid``, start time and the tokens bound to it stay attached.

Revoking a session elsewhere (``tokens.revocation.end_sessions``) drops the cache entry, so the
next request reads the row, finds it revoked, and is anonymous.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, router, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import UserSession
from accounts.network import client_ip, user_agent
from authserver import janitor
from authserver.breaker import CacheUnavailable

logger = logging.getLogger(__name__)

# Keys this project keeps in the session data, next to Django's own _auth_user_* keys.
SID_KEY = "_sid"
AUTH_TIME_KEY = "_auth_time"
AMR_KEY = "_amr"


class SessionStore(CachedDBStore):
    cache_key_prefix = "accounts.session:"

    def __init__(self, session_key: str | None = None):
        super().__init__(session_key)
        self.ip_address: str | None = None
        self.user_agent = ""

    @classmethod
    def get_model_class(cls):
        return UserSession

    @staticmethod
    def digest(session_key: str) -> str:
        """What the row and the cache store instead of the cookie value."""
        return hashlib.sha256(session_key.encode()).hexdigest()

    @classmethod
    def cache_key_for(cls, digest: str) -> str:
        return cls.cache_key_prefix + digest

    @property
    def cache_key(self) -> str:
        return self.cache_key_for(self.digest(self._get_or_create_session_key()))

    @property
    def stored_key(self) -> str | None:
        """The row's primary key for this session (None before the session is saved)."""
        return self.digest(self.session_key) if self.session_key else None

    def bind_request(self, request: HttpRequest) -> None:
        """Remember where the request came from, for the row this store writes."""
        self.ip_address = client_ip(request)
        self.user_agent = user_agent(request)

    @property
    def sid(self) -> str | None:
        return self.get(SID_KEY)

    def load(self) -> dict:
        """Django's cached_db load, except that a cache that cannot be reached (Redis down) is
        not an error: the row answers, and the next request tries the cache again."""
        try:
            data = self._cache.get(self.cache_key)
        except Exception:
            data = None
        if data is not None:
            return data
        row = self._get_session_from_db()
        if row is None:
            return {}
        data = self.decode(row.session_data)
        try:
            self._cache.set(self.cache_key, data, self.get_expiry_age(expiry=row.expire_date))
        except CacheUnavailable:
            pass  # an outage the breaker has reported already
        except Exception:
            logger.warning("Cache unreachable: sessions are read from the database")
        return data

    def _get_session_from_db(self):
        try:
            return self.model.objects.active().get(session_key=self.digest(self.session_key))
        except (self.model.DoesNotExist, SuspiciousOperation):
            self._session_key = None
            return None

    def create_model_instance(self, data: dict):
        auth_time = data.get(AUTH_TIME_KEY)
        return self.model(
            session_key=self.digest(self._get_or_create_session_key()),
            session_data=self.encode(data),
            expire_date=self.get_expiry_date(),
            user_id=data.get(SESSION_KEY),
            sid=data.get(SID_KEY),
            auth_time=datetime.fromtimestamp(auth_time, UTC) if auth_time else None,
            amr=data.get(AMR_KEY, []),
            ip_address=self.ip_address,
            user_agent=self.user_agent,
        )

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        row = self.create_model_instance(data)
        if must_create:
            using = router.db_for_write(self.model, instance=row)
            try:
                with transaction.atomic(using=using):
                    row.save(force_insert=True, using=using)
            except IntegrityError:
                if self.exists(self.session_key):
                    raise CreateError from None  # key collision: create() picks another key
                raise UpdateError from None  # e.g. the user was deleted meanwhile
        else:
            updated = self.model.objects.filter(
                session_key=row.session_key, revoked_at__isnull=True
            ).update(
                session_data=row.session_data,
                expire_date=row.expire_date,
                user_id=row.user_id,
                sid=row.sid,
                auth_time=row.auth_time,
                amr=row.amr,
            )
            if not updated:
                # Ended (or purged) while this request ran: Django answers SessionInterrupted.
                raise UpdateError
        try:
            self._cache.set(self.cache_key, self._session, self.get_expiry_age())
        except CacheUnavailable:
            pass
        except Exception:
            logger.exception("Could not write the session to the cache")

    def exists(self, session_key: str) -> bool:
        return self.model.objects.filter(session_key=self.digest(session_key)).exists()

    def delete(self, session_key: str | None = None) -> None:
        if (session_key or self.session_key) is None:
            return
        key = self.digest(session_key or self.session_key)
        try:
            self._cache.delete(self.cache_key_for(key))
        except Exception:
            logger.exception("Could not drop the session from the cache")
        # An anonymous session is worth nothing once dropped. A signed-in one keeps its row,
        # marked ended, for the person's and operators' records until the purge job runs.
        self.model.objects.filter(session_key=key, user__isnull=True).delete()
        self.model.objects.filter(session_key=key, revoked_at__isnull=True).update(
            revoked_at=timezone.now(),
            ended_by=self.model.EndedBy.PERSON,
            end_reason="signed out",
        )

    def cycle_key(self) -> None:
        data = self._session
        old_key = self.session_key
        if old_key is None or SESSION_KEY not in data:
            # Signing in: Django's way, a new row under a new key (fixation defence).
            return super().cycle_key()
        new_key = self._get_new_session_key()
        moved = self.model.objects.filter(
            session_key=self.digest(old_key), revoked_at__isnull=True
        ).update(session_key=self.digest(new_key))
        try:
            self._cache.delete(self.cache_key_for(self.digest(old_key)))
        except Exception:
            logger.exception("Could not drop the session from the cache")
        if not moved:
            # Ended meanwhile: never carry a revoked login over to a new key.
            self._session_key = None
            self._session_cache = {}
            return
        self._session_key = new_key
        self._session_cache = data
        self.modified = True

    def touch(self) -> None:
        """Record activity (last seen, IP, device) at most once per SESSION_TOUCH_INTERVAL.

        The interval is kept by an atomic cache ``add``, so any number of web processes write the
        row about once a minute per session, not on every request.
        """
        key = self.stored_key
        if key is None:
            return
        try:
            due = self._cache.add(
                self.cache_key_for(key) + ":seen", 1, settings.SESSION_TOUCH_INTERVAL
            )
        except CacheUnavailable:
            return
        except Exception:
            logger.exception("Could not reach the cache to record session activity")
            return
        if due:
            self.model.objects.filter(session_key=key, revoked_at__isnull=True).update(
                last_seen=timezone.now(), ip_address=self.ip_address, user_agent=self.user_agent
            )

    @classmethod
    def clear_expired(cls) -> None:
        """Django's hook for dropping expired sessions runs the same bounded purge as the job."""
        sessions = janitor.kinds()["sessions"]  # accounts/expiry.py, registered at start-up
        while janitor.purge(sessions).remaining:
            pass
