"""CPU per DPoP proof check (tokens/dpop.check_proof), in-process: no HTTP, no gunicorn.

    DATABASE_URL=... CACHE_URL=redis://127.0.0.1:6379/10 SECRET_KEY=... ISSUER=https://... \\
        .venv/bin/python bench/dpop_proofs.py [--count 2000]

For each algorithm, signs ``--count`` distinct proofs for POST /token with one key (as a client
does), then times ``check_proof`` over all of them with ``time.process_time`` (this process's
user + system CPU): once with the single-use ``jti`` written to the configured cache (a Redis
round trip: most of its CPU is the two system calls) and once on fresh proofs with the cache
write left out, which is the proof check proper. Prints microseconds per proof.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authserver.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2_000)
    args = parser.parse_args()

    import django

    django.setup()
    from joserfc import jws
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    from tokens import dpop

    url = dpop.endpoint_url("/token")
    keys = {
        "ES256": ECKey.generate_key("P-256"),
        "RS256": RSAKey.generate_key(2048),
        "EdDSA": OKPKey.generate_key("Ed25519"),
    }

    def proofs(alg: str, key) -> list[str]:
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
        return [
            jws.serialize_compact(
                header,
                json.dumps(
                    {"jti": str(uuid.uuid4()), "htm": "POST", "htu": url, "iat": int(time.time())}
                ),
                key,
                algorithms=[alg],
            )
            for _ in range(args.count)
        ]

    def per_proof(values: list[str]) -> float:
        dpop.check_proof(values[0], method="POST", url=url)  # warm: key import, connection
        started = time.process_time()
        for value in values[1:]:
            dpop.check_proof(value, method="POST", url=url)
        return (time.process_time() - started) / (len(values) - 1) * 1e6

    print(f"{args.count:,} proofs per row, CPU per proof (time.process_time)")
    print(f"{'alg':8} {'with the jti cache write':>26} {'the check alone':>18}")
    real_add = dpop._add
    for alg, key in keys.items():
        with_cache = per_proof(proofs(alg, key))
        dpop._add = lambda key, timeout: True  # the check proper, without the cache round trip
        try:
            alone = per_proof(proofs(alg, key))
        finally:
            dpop._add = real_add
        print(f"{alg:8} {with_cache:>23.0f} µs {alone:>15.0f} µs")


if __name__ == "__main__":
    main()
