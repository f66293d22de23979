"""Introspection's memory of live tokens (tokens/liveness.py): every revocation, whoever makes it
and from whichever process, ends it at once (RFC 7662 §2.2: "active" says whether the token is
currently active; RFC 7009 §2.1: a revoked token must not be usable afterwards).

These tests commit (``transaction=True``): the memory is never used inside a transaction, and
PostgreSQL announces changes only when they commit. "Another process" is a connection of its own
writing the rows with SQL, as another worker, the admin on another host or an operator in psql
would: nothing in this process is told, only PostgreSQL's NOTIFY reaches it.
"""

import time

import pytest

from accounts.models import UserSession
from tests.conftest import second_connection
from tests.factories import ClientFactory, Registered
from tests.tokens.conftest import endpoint, exchange, get_code
from tokens import access_tokens, liveness, revocation
from tokens.models import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_process():
    """A PostgreSQL session of its own, committing each statement."""
    with second_connection(autocommit=True) as other:
        yield other


@pytest.fixture(autouse=True)
def _listening_again():
    """A test that cut the listening connection leaves a retry pause behind; start without."""
    liveness._this_process().retry_at = 0.0


@pytest.fixture
def resource(db) -> Registered:
    """The resource server that introspects: a client of its own, so that deactivating the
    token's client does not also stop the one asking."""
    return Registered.of(ClientFactory())


@pytest.fixture
def token(logged_in_client, confidential) -> str:
    code, verifier = get_code(logged_in_client, confidential, scope="openid profile")
    return exchange(confidential, code, verifier).json()["access_token"]


def active(client, token: str) -> bool:
    response = endpoint("/introspect", client, {"token": token})
    assert response.status_code == 200, response.content
    return response.json()["active"]


def session_of(user) -> UserSession:
    return UserSession.objects.get(user=user, revoked_at__isnull=True)


def remembered(token: str, client) -> bool:
    """Introspect; True if the process now remembers the token as live."""
    assert active(client, token) is True
    view = liveness._this_process()
    return view.listener is not None and access_tokens.read(token)["jti"] in view.live


REVOCATIONS = {
    "session ended": "UPDATE accounts_usersession SET revoked_at = now() WHERE sid = %(sid)s",
    "session expiry brought forward": (
        "UPDATE accounts_usersession SET expire_date = now() - interval '1 second' "
        "WHERE sid = %(sid)s"
    ),
    "session deleted": "DELETE FROM accounts_usersession WHERE sid = %(sid)s",
    "person deactivated": "UPDATE accounts_user SET is_active = false WHERE id = %(user)s",
    "client deactivated": "UPDATE tokens_client SET is_active = false WHERE client_id = %(client)s",
    "token deny-listed": (
        "INSERT INTO tokens_revokedaccesstoken (jti, expires, revoked_at) "
        "VALUES (%(jti)s, now() + interval '1 hour', now())"
    ),
}


@pytest.mark.parametrize("statement", REVOCATIONS.values(), ids=REVOCATIONS.keys())
def test_rfc7662_2_2_a_revocation_from_another_process_ends_a_remembered_token_at_once(
    statement, token, confidential, resource, user, other_process
):
    assert remembered(token, resource)
    other_process.execute(
        statement,
        {
            "sid": session_of(user).sid,
            "user": user.pk,
            "client": confidential.client_id,
            "jti": access_tokens.read(token)["jti"],
        },
    )
    # No sleep: PostgreSQL has delivered the NOTIFY by the time a request gets here.
    assert active(resource, token) is False


def test_the_memory_is_what_answers_and_the_triggers_are_what_end_it(
    token, resource, user, other_process
):
    """With the session table's triggers off, a session ended in SQL goes unannounced and the
    remembered token stays active: proof that the rows were not read again, and that the
    NOTIFY is what makes the other tests pass."""
    assert remembered(token, resource)
    sid = session_of(user).sid
    other_process.execute("ALTER TABLE accounts_usersession DISABLE TRIGGER USER")
    try:
        other_process.execute(
            "UPDATE accounts_usersession SET revoked_at = now() WHERE sid = %s", [sid]
        )
        assert active(resource, token) is True  # unannounced: memory answers
    finally:
        other_process.execute("ALTER TABLE accounts_usersession ENABLE TRIGGER USER")
    liveness.changed()  # as the revocation service does in its own process
    assert active(resource, token) is False


def test_with_the_setting_at_zero_every_check_reads_the_rows(
    token, confidential, user, other_process, settings
):
    settings.ACCESS_TOKEN_LIVENESS_CACHE = 0
    assert active(confidential, token) is True
    other_process.execute("ALTER TABLE accounts_usersession DISABLE TRIGGER USER")
    try:
        other_process.execute(
            "UPDATE accounts_usersession SET revoked_at = now() WHERE sid = %s",
            [session_of(user).sid],
        )
        assert active(confidential, token) is False
    finally:
        other_process.execute("ALTER TABLE accounts_usersession ENABLE TRIGGER USER")


def test_a_lost_listening_connection_forgets_everything(token, confidential, user, other_process):
    """If the process stops hearing PostgreSQL, nothing it remembers may answer: a revocation
    it could not hear (triggers off here) is seen because the rows are read again."""
    assert remembered(token, confidential)
    listener_pid = liveness._this_process().listener.info.backend_pid
    other_process.execute("SELECT pg_terminate_backend(%s)", [listener_pid])
    other_process.execute("ALTER TABLE accounts_usersession DISABLE TRIGGER USER")
    try:
        other_process.execute(
            "UPDATE accounts_usersession SET revoked_at = now() WHERE sid = %s",
            [session_of(user).sid],
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the backend's exit reaches the socket promptly
            if not active(confidential, token):
                break
            time.sleep(0.05)
        assert active(confidential, token) is False
    finally:
        other_process.execute("ALTER TABLE accounts_usersession ENABLE TRIGGER USER")


def test_the_revocation_endpoint_in_this_process_ends_a_remembered_token(token, confidential):
    """RFC 7009 §2.1, through the revocation service (it forgets this process's memory itself)."""
    assert remembered(token, confidential)
    assert endpoint("/revoke", confidential, {"token": token}).status_code == 200
    assert active(confidential, token) is False


def test_a_deactivated_client_through_the_service_ends_its_tokens(token, confidential, resource):
    assert remembered(token, resource)
    revocation.deactivate_client(Client.objects.get(client_id=confidential.client_id))
    assert active(resource, token) is False


QUIET = {
    "a session seen again": "UPDATE accounts_usersession SET last_seen = now() WHERE sid = %(sid)s",
    "a session made longer": (
        "UPDATE accounts_usersession SET expire_date = expire_date + interval '1 hour' "
        "WHERE sid = %(sid)s"
    ),
    "a sign-in": "UPDATE accounts_user SET last_login = now() WHERE id = %(user)s",
    "a client renamed": "UPDATE tokens_client SET name = 'renamed' WHERE client_id = %(client)s",
    "an expired deny-list entry purged": "DELETE FROM tokens_revokedaccesstoken",
}
LOUD = {**REVOCATIONS, "a client deleted": "DELETE FROM tokens_client WHERE client_id = %(client)s"}


def notified(other_process, statement, values) -> bool:
    """Whether ``statement``, committed by yet another session, NOTIFYs the channel."""
    with second_connection(autocommit=True) as listener:
        listener.execute(f"LISTEN {liveness.CHANNEL}")
        other_process.execute(statement, values)
        return any(True for _ in listener.notifies(timeout=1.0, stop_after=1))


@pytest.mark.parametrize(
    ("statement", "loud"),
    [(s, False) for s in QUIET.values()] + [(s, True) for s in LOUD.values()],
    ids=[*QUIET.keys(), *LOUD.keys()],
)
def test_only_what_can_end_a_token_is_announced(
    statement, loud, confidential, user, logged_in_client, other_process
):
    """Sign-ins and session refreshes happen all the time: they must not make every worker
    forget; what can end a token must."""
    values = {
        "sid": session_of(user).sid,
        "user": user.pk,
        "client": confidential.client_id,
        "jti": "jti-0123456789",
    }
    assert notified(other_process, statement, values) is loud
