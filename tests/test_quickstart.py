"""The embedded quick start (DEBUG on, nothing configured) migrates and serves a working login.

No PostgreSQL, no Redis: the child processes get an environment built from scratch, so nothing
from ``make test`` (DATABASE_URL, CACHE_URL, DEBUG=false, ...) leaks in, and this test never
touches the test database.
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(BASE_DIR / "manage.py")
# Only what a shell needs; every setting of the server itself is left to its defaults.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
START_TIMEOUT = 30


def quick_start_env(data_dir: Path) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(DEBUG="true", DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, log: Path) -> requests.Response:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"runserver exited with {server.returncode}:\n{log.read_text()}")
        try:
            response = requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            return response
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {START_TIMEOUT}s:\n{log.read_text()}")


def the_token_flow_works_on_sqlite(base: str, browser: requests.Session, log: Path) -> None:
    """The walkthrough seed_demo prints: the code flow with PKCE, then a refresh and an
    introspection, whose hot statements take SQLite's path (the ORM, tokens/token_store.py)."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
    authorize = (
        f"{base}/authorize?response_type=code&client_id=demo-confidential"
        "&redirect_uri=http://127.0.0.1:8765/callback&scope=openid%20profile&state=xyz"
        "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    )
    consent = browser.get(authorize, allow_redirects=False, timeout=10)
    assert consent.status_code == 200, log.read_text()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', consent.text).group(1)
    allowed = browser.post(
        authorize,
        data={"decision": "allow", "csrfmiddlewaretoken": csrf},
        headers={"Referer": authorize},
        allow_redirects=False,
        timeout=10,
    )
    assert allowed.status_code == 302, log.read_text()
    code = re.search(r"[?&]code=([^&]+)", allowed.headers["Location"]).group(1)
    auth = ("demo-confidential", "demo-secret")
    tokens = requests.post(
        f"{base}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:8765/callback",
        },
        auth=auth,
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    refreshed = requests.post(
        f"{base}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text

    def introspect(token: str) -> bool:
        answer = requests.post(f"{base}/introspect", data={"token": token}, auth=auth, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["active"]

    assert introspect(refreshed.json()["access_token"]) is True
    # The new refresh token is used (so the first one is past its retry window's reach)...
    newest = requests.post(
        f"{base}/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert newest.status_code == 200, newest.text
    # ...so presenting the first one again is a replay (RFC 9700 §4.14.2).
    replayed = requests.post(
        f"{base}/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert replayed.json()["error"] == "invalid_grant"
    # RFC 9700 §4.14.2: the replay revoked the family, the new tokens included.
    assert introspect(newest.json()["access_token"]) is False


def test_the_quick_start_migrates_and_serves_a_working_login_without_postgres_or_redis(tmp_path):
    data_dir = tmp_path / "data"
    env = quick_start_env(data_dir)

    manage("migrate", "--noinput", env=env)
    assert (data_dir / "db.sqlite3").is_file()
    assert "demo / demo-password" in manage("seed_demo", env=env)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "runserver.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, MANAGE, "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        page = wait_for(f"{base}/login/", server, log)
        assert "Sign in" in page.text

        browser = requests.Session()
        form = browser.get(f"{base}/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token and "csrftoken" in browser.cookies
        response = browser.post(
            f"{base}/login/",
            data={
                "username": "demo",
                "password": "demo-password",
                "csrfmiddlewaretoken": token.group(1),
            },
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, log.read_text()
        assert response.headers["Location"] == "/"

        home = browser.get(f"{base}/", allow_redirects=False, timeout=10)
        assert home.status_code == 200
        assert "Your account" in home.text and "demo" in home.text

        the_token_flow_works_on_sqlite(base, browser, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # Everything the quick start keeps is under DATA_DIR.
    assert (data_dir / "db.sqlite3").is_file()
