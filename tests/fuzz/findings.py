"""Defects the fuzzers found and the application still has: how to recognise each one's answers,
so that the fuzz runs keep checking everything else. Every entry has a strict-xfail reproduction
in tests/fuzz/test_found.py; fixing the application makes that test fail (XPASS), and then both
the reproduction's xfail mark and the entry here go.

None is open now: the six found so far (malformed Basic credentials, a NUL in client_id, deeply
nested registration JSON, a jwks that is not an object, parameter names echoed into
error_description, a form charset other than exactly utf-8) are fixed, and their reproductions
in test_found.py are ordinary regression tests."""

from tests.fuzz.harness import FINDINGS  # noqa: F401 - the list the harness consults
