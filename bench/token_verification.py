"""What checking an access token adds to a request: ``python -m bench.token_verification``.

Measures, in one process against a real (embedded) Valkey, the median and p99 time of
:meth:`portico_common.tokens.TokenVerifier.verify` for a valid token, twice: a token seen for the
first time (header parse, JWKS lookup, Ed25519 signature and claims check with PyJWT, then the
session ``EXISTS``) and a token seen before (the verifier remembers steps 1-3 per token until it
expires, so only the session ``EXISTS`` is left) — next to a same-run baseline: one bare
``EXISTS`` round trip and one ``PING``, so the figures can be read apart from the machine's
Valkey latency. Every REST call pays this twice (gateway, then the service behind it); a gRPC
call straight to a service pays it once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portico_auth.keys import KeyRing, SigningKey
from portico_auth.tokens import TokenIssuer
from portico_common.tokens import JwksCache, TokenVerifier, ValkeySessions
from portico_devstack.backends import EmbeddedValkey


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm up: connection pool, JWKS fetch, code paths
        await call()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1e6)
    return samples


def _line(name: str, samples: list[float]) -> str:
    """One printed row: median and p99 in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"{name:<28} median {statistics.median(samples):8.1f} µs   p99 {p99:8.1f} µs"


async def measure(valkey_url: str, n: int) -> dict[str, float]:
    key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    issuer = TokenIssuer(
        KeyRing(active=key, keys=(key,)), issuer="portico", audience="portico-api", ttl_s=900
    )
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        sid = uuid.uuid4().hex
        await client.set(f"portico:auth:v1:session:{sid}", "1", ex=600)
        user = str(uuid.uuid4())
        token = issuer.issue(user_id=user, session_id=sid, roles=("user",))
        fresh = iter(
            [issuer.issue(user_id=user, session_id=sid, roles=("user",)) for _ in range(n + 200)]
        )  # a new jti each: every one is seen for the first time

        async def jwks() -> list[dict[str, str]]:
            return [key.jwk()]

        verifier = TokenVerifier(
            JwksCache(jwks), ValkeySessions(client), issuer="portico", audience="portico-api"
        )
        ping = await _timed(client.ping, n)
        exists = await _timed(lambda: client.exists(f"portico:auth:v1:session:{sid}"), n)
        first = await _timed(lambda: verifier.verify(next(fresh)), n)
        verify = await _timed(lambda: verifier.verify(token), n)
    finally:
        await client.aclose()
    print(_line("valkey PING (baseline)", ping))
    print(_line("valkey EXISTS (baseline)", exists))
    print(_line("verify, token first seen", first))
    print(_line("verify, token seen before", verify))
    local = statistics.median(first) - statistics.median(exists)
    print(f"{'first seen, local part':<28} median {local:8.1f} µs")
    return {
        "verify_first_median_us": statistics.median(first),
        "verify_repeat_median_us": statistics.median(verify),
        "exists_median_us": statistics.median(exists),
        "local_median_us": local,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="timed calls per measurement")
    parser.add_argument("--valkey-url", default="", help="a Valkey to use instead of embedded")
    args = parser.parse_args()
    if args.valkey_url:
        asyncio.run(measure(args.valkey_url, args.n))
        return
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedValkey(Path(data))
        server.start()
        try:
            asyncio.run(measure(server.url, args.n))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
