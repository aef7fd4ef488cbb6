"""Bench-only: the "auth off" variant of the ``auth_overhead`` case (never in a product image).

Python imports ``sitecustomize`` at start-up from the first directory of ``sys.path`` that has
one; :mod:`bench.harness` puts this directory first on the ``PYTHONPATH`` of one gateway + users
pair, and only that pair. It replaces :func:`portico_common.access.authenticate` — the one
function through which both the gateway's middleware and every service's ``AccessInterceptor``
verify a token — by a version that verifies an ``Authorization`` value for real once and then
answers from a dict: no signature check, no claims, no session ``EXISTS``. Everything else on the
path stays: the header is still read, each RPC's rule is still applied to the principal (so the
owner can read their own account and nobody else's), and a request without a token is still
refused. Its cost over this variant is what checking tokens costs a request.
"""

from __future__ import annotations

from typing import Any

from portico_common import access

_real = access.authenticate
_known: dict[str | None, Any] = {}


async def _remembered(verifier: Any, authorization: str | None, *, read_only: bool = False) -> Any:
    principal = _known.get(authorization)
    if principal is None:
        principal = await _real(verifier, authorization, read_only=read_only)
        _known[authorization] = principal
    return principal


access.authenticate = _remembered
