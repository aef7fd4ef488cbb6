"""Exactly-once POSTs with ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header).

:class:`IdempotencyMiddleware` (pure ASGI) acts only on ``POST`` requests that carry the header;
every other request passes untouched. The key is 1 to 255 visible ASCII characters (a structured-
field string such as ``"8e03…"`` is unquoted first); anything else is 400.

A record lives in Valkey under ``portico:gateway:v1:idem:<user|address>:<id>:<sha256(method,
path, key)>``: keys are scoped per caller (``principal.user_id`` when the outer authentication
middleware set one, else the client address) and per method and path. The request is
fingerprinted (SHA-256 of content type, query string and body; bodies are already capped by the
outer BodyLimitMiddleware). Then:

1. **First request:** one Lua script claims the key atomically (``running`` + fingerprint + a
   random token, with a lock TTL). The request runs; its final response (status, the headers that
   describe it — ``Content-Type``, ``Location``, ``ETag``, … but never ``X-Request-ID`` — and
   body) replaces the claim before the last body chunk reaches the client, and expires after the
   record TTL. A 5xx or 429 is not stored: the claim is released so that a retry runs again.
   Nor is any answer of a request the route did not mark :func:`storable`: the routes mark a
   request just before they call an upstream, and only when the answer carries no credential
   (a token answer's fields are ``debug_redact`` in the proto). So an unknown path, a request
   refused by the gateway itself, and a login or refresh leave no record: a token never sits in
   Valkey, and a spent refresh token presented again with the same key meets reuse detection
   instead of a replay of the live one.
2. **Same key, same fingerprint, finished:** the stored response is replayed with
   ``Idempotent-Replayed: true``; the handler does not run.
3. **Same key, other fingerprint:** 422 problem (the key was reused for a different request).
4. **Same key while the first is still running:** the duplicate polls (short backoff, at most
   ``wait_s``) and replays the stored response; if the first one released the claim, the
   duplicate claims it and runs. Still running after the wait: 409 problem with ``Retry-After``.

If the gateway dies mid-request, the claim expires after the lock TTL and a retry runs again.

**Valkey down: fail closed (503 with Retry-After).** A client that sends ``Idempotency-Key``
asked for exactly-once semantics, typically because the operation must not happen twice (a
payment, a sign-up). Without the store the gateway cannot tell a retry from a first attempt, so
serving the request could execute it twice — the one thing the client asked us to prevent. A 503
is the honest answer: nothing happened, retry later with the same key. (Requests without the
header are not affected, and rate limiting fails open instead: there, availability wins.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from valkey.exceptions import ValkeyError

from portico_common.tokens import Principal
from portico_gateway.errors import BodyTooLarge
from portico_gateway.middleware.asgi import no_body

_log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PREFIX = "portico:gateway:v1:idem:"
#: Response headers stored and replayed (others, like X-Request-ID, belong to each answer).
STORED_HEADERS = frozenset(
    {"content-type", "content-location", "location", "etag", "last-modified", "content-language"}
)
VALKEY_FAILURES = (ValkeyError, OSError)
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: ``scope["state"]`` flag: this request's answer may be stored (see :func:`storable`).
STORABLE = "idempotency_storable"
_FIRST_POLL_S, _MAX_POLL_S = 0.02, 0.25

# KEYS[1] = record; ARGV = fingerprint, token, lock ms. Claims a free key (returns nil) or
# returns the record as {state, fingerprint, status, headers, body}.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'state', 'fp', 'status', 'headers', 'body')
end
redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return false
"""
# KEYS[1] = record; ARGV = token, status, headers (JSON), body, ttl ms. Stores the response if
# the claim is still ours (a claim that expired and was taken over is left alone).
_STORE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
# KEYS[1] = record; ARGV[1] = token. Drops our claim (nothing stored: a retry runs again).
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _StoreUnavailableError(Exception):
    """Valkey failed while the outcome of the request still depended on it."""


def storable(scope: Scope) -> None:
    """Let this request's answer be stored for replay: a route calls it just before it calls an
    upstream, unless the answer will carry credentials (see the module docstring)."""
    scope.setdefault("state", {})[STORABLE] = True


def parse_key(values: list[str]) -> str | None:
    """The key of ``Idempotency-Key`` values, or None when absent twice, empty or malformed."""
    if len(values) != 1:
        return None
    value = values[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':  # a structured-field string
        value = re.sub(r"\\([\\\"])", r"\1", value[1:-1])
    return value if _VALID_KEY.fullmatch(value) else None


def fingerprint(*, content_type: str, query: bytes, body: bytes) -> str:
    """SHA-256 over what makes two requests with one key the same request."""
    digest = hashlib.sha256()
    for part in (content_type.strip().lower().encode("latin-1"), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyMiddleware:
    """Replays the stored response of a POST retried with the same key (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ttl_s: float,
        lock_ttl_s: float,
        wait_s: float,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.lock_ms = max(1, round(lock_ttl_s * 1000))
        self.wait_s = wait_s
        self.retry_after = str(max(1, retry_after_s))
        self._client: Any = None
        self._scripts: tuple[Any, Any, Any] = (None, None, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        values = headers.getlist(HEADER)
        if not values:
            await self.app(scope, receive, send)
            return
        key = parse_key(values)
        if key is None:
            detail = f"{HEADER} must be one string of 1 to 255 visible ASCII characters"
            await self._problem(scope, send, 400, detail, kind="invalid-idempotency-key")
            return
        try:
            body = await _read_body(receive)
        except BodyTooLarge as exc:  # chunked body over the limit (the length was checked)
            await self._problem(scope, send, 413, str(exc))
            return
        if body is None:  # the client went away before its body arrived
            return
        fp = fingerprint(
            content_type=headers.get("content-type", ""), query=scope["query_string"], body=body
        )
        record_key = self._record_key(scope, key)
        try:
            await self._handle(scope, _replay_body(body, receive), send, record_key, fp)
        except _StoreUnavailableError:
            detail = f"requests with {HEADER} cannot be served right now; retry later"
            await self._problem(scope, send, 503, detail, headers={"Retry-After": self.retry_after})

    def _record_key(self, scope: Scope, key: str) -> str:
        principal = scope.get("state", {}).get("principal")
        if isinstance(principal, Principal):
            caller = f"user:{principal.user_id}"
        else:
            client = scope.get("client")
            caller = f"address:{client[0] if client else 'unknown'}"
        request = f"{scope['method']}\n{scope['path']}\n{key}".encode()
        return f"{KEY_PREFIX}{caller}:{hashlib.sha256(request).hexdigest()}"

    def _bind(self, client: Any) -> tuple[Any, Any, Any]:
        if client is not self._client:  # one client per app: register the scripts once
            self._scripts = (
                client.register_script(_CLAIM),
                client.register_script(_STORE),
                client.register_script(_RELEASE),
            )
            self._client = client
        return self._scripts

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, record_key: str, fp: str
    ) -> None:
        try:
            claim, store, release = self._bind(scope["state"]["valkey"])
        except KeyError as exc:
            raise _StoreUnavailableError from exc
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.wait_s
        pause = _FIRST_POLL_S
        while True:
            try:
                record = await claim(keys=[record_key], args=[fp, token, self.lock_ms])
            except VALKEY_FAILURES as exc:
                _log.warning("Valkey unreachable, refusing an idempotent request: %s", exc)
                raise _StoreUnavailableError from exc
            if record is None:  # claimed: this request runs
                await self._run(scope, receive, send, record_key, token, store, release)
                return
            state, stored_fp, status, stored_headers, body = record
            if stored_fp is not None and stored_fp.decode() != fp:
                detail = f"this {HEADER} was used for a different request"
                await self._problem(scope, send, 422, detail, kind="idempotency-key-reused")
                return
            if state == b"done":
                await _replay(scope, send, int(status), stored_headers, body)
                return
            now = time.monotonic()
            if now >= deadline:
                detail = f"a request with this {HEADER} is still being processed"
                headers = {"Retry-After": self.retry_after}
                await self._problem(
                    scope, send, 409, detail, kind="idempotency-key-in-use", headers=headers
                )
                return
            await asyncio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _MAX_POLL_S)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        record_key: str,
        token: str,
        store: Callable[..., Any],
        release: Callable[..., Any],
    ) -> None:
        status = 0
        kept: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        stored = False

        async def capture(message: Message) -> None:
            nonlocal status, stored
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.decode("latin-1").lower() in STORED_HEADERS:
                        kept.append((name.decode("latin-1"), value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if (
                    not message.get("more_body", False)
                    and status < 500
                    and status != 429
                    and scope.get("state", {}).get(STORABLE)
                ):
                    # Stored before the client sees the end, so a retry after it always replays.
                    try:
                        args = [token, status, json.dumps(kept), b"".join(chunks), self.ttl_ms]
                        stored = bool(await store(keys=[record_key], args=args))
                    except VALKEY_FAILURES as exc:
                        _log.error("could not store an idempotent response: %s", exc)
                        stored = True  # the claim expires with its lock TTL; retries get 409
            await send(message)

        scope.setdefault("state", {})[STORABLE] = False  # until the route says otherwise
        try:
            await self.app(scope, receive, capture)
        finally:
            if not stored:  # 5xx, 429, not storable, an exception, no response: runs again
                try:
                    await asyncio.shield(release(keys=[record_key], args=[token]))
                except VALKEY_FAILURES as exc:
                    _log.warning("could not release an idempotency claim: %s", exc)

    async def _problem(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        from portico_gateway.errors import problem  # errors.py imports middleware.py

        response = problem(Request(scope), status=status, detail=detail, kind=kind, headers=headers)
        await response(scope, no_body, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as usual

    return replay


async def _replay(scope: Scope, send: Send, status: int, headers: bytes, body: bytes) -> None:
    kept: dict[str, str] = dict(json.loads(headers))
    kept[REPLAYED_HEADER] = "true"
    await Response(body, status_code=status, headers=kept)(scope, no_body, send)
