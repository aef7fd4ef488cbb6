"""Ends a deleted user's sessions: the users service's ``user.deleted`` events, consumed.

The users service writes ``user.deleted`` to its outbox in the transaction that deletes the
user; its relay publishes it to the shared event stream (``AUTH_OUTBOX__STREAM``, default
``portico:events:v1``). This consumer reads that stream in a consumer group of its own
(``AUTH_USER_DELETIONS__GROUP``, default ``auth-sessions``; created at start with
``XGROUP CREATE … 0 MKSTREAM``, so a new group starts from the stream's first entry and a
deletion published before the auth service first ran is still seen). For each ``user.deleted``
entry it calls :meth:`portico_auth.service.AuthService.user_deleted` (every session of the user
ends, their access tokens stop at once through the sessions-ended channel, and their credential
is removed), then ``XACK``\\s; any other entry is acknowledged untouched.

At-least-once, and handling is idempotent (ending sessions that are gone and deleting a
credential that is gone are no-ops), so a redelivery is harmless. An entry whose handling failed
(Valkey or PostgreSQL down) stays pending; the loop backs off (doubling up to
``max_backoff_s``), and every round first takes over entries pending longer than
``claim_idle_ms`` (``XAUTOCLAIM``: this consumer's own failures, or a replica that died), so
nothing is skipped. A malformed ``user.deleted`` (its subject not a UUID) is logged and
acknowledged: there is no user to act on. No dead-letter stream: nothing a well-formed entry
holds can make the handling fail for good.

What it does not cover, by design, is the window before it runs: the outbox relay's poll
(``USERS_OUTBOX__POLL_INTERVAL_S``) plus one read. RefreshToken closes that window for refresh
tokens by checking the user itself (``service.py``); access tokens of a session ended here stop
at once. See SECURITY.md ("Ended access").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from uuid import UUID

from valkey.asyncio import Valkey
from valkey.exceptions import ResponseError

from portico_auth.config import AuthSettings, UserDeletionSettings
from portico_auth.service import AuthService
from portico_common.runtime import Runtime

_log = logging.getLogger(__name__)

USER_DELETED = "user.deleted"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class UserDeletions:
    """The consumer; see the module docstring."""

    def __init__(
        self,
        service: AuthService,
        client: Valkey,
        settings: UserDeletionSettings,
        *,
        stream: str,
    ) -> None:
        self._service = service
        self._client = client
        self._settings = settings
        self._stream = stream
        self._claim_from = "0-0"

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self._client.xgroup_create(
                self._stream, self._settings.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def round(self) -> int:
        """Take over stale entries, then read new ones (blocks up to ``block_ms``); how many
        entries were handled."""
        s = self._settings
        handled = await self._claim_stale()
        reply = await self._client.xreadgroup(
            s.group, s.name, {self._stream: ">"}, count=s.batch_size, block=s.block_ms
        )
        for _stream, messages in reply or []:
            for message_id, fields in messages:
                await self.handle(_text(message_id), fields)
                handled += 1
        return handled

    async def _claim_stale(self) -> int:
        s = self._settings
        reply = await self._client.xautoclaim(
            self._stream,
            s.group,
            s.name,
            s.claim_idle_ms,
            start_id=self._claim_from,
            count=s.batch_size,
        )
        self._claim_from = _text(reply[0])
        entries = [(m, f) for m, f in reply[1] if f is not None]
        for message_id, fields in entries:
            await self.handle(_text(message_id), fields)
        return len(entries)

    async def handle(self, message_id: str, fields: Mapping[Any, Any]) -> None:
        """Act on one entry and acknowledge it; raises (entry left pending) when that failed."""
        entry = {_text(k): _text(v) for k, v in fields.items()}
        if entry.get("type") == USER_DELETED:
            subject = entry.get("subject", "")
            try:
                user_id = str(UUID(subject))
            except ValueError:
                _log.warning("ignoring a user.deleted entry (%s) without a user id", message_id)
            else:
                ended = await self._service.user_deleted(user_id, actor=entry.get("actor") or None)
                _log.info("user %s was deleted: %d session(s) ended", user_id, ended)
        await self._client.xack(self._stream, self._settings.group, message_id)

    async def run(self) -> None:
        """Consume until cancelled (the service's background task), backing off on failures."""
        pause = 0.0
        group_ready = False
        while True:
            if pause:
                await asyncio.sleep(pause)
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                await self.round()
            except Exception as exc:  # Valkey or PostgreSQL down, the users service gone …
                group_ready = False  # a Valkey that restarted empty has lost the group
                pause = min(max(pause * 2, 0.1), self._settings.max_backoff_s)
                _log.warning(
                    "user-deletion consumer failed (%s: %s); retrying in %.1f s",
                    type(exc).__name__,
                    exc,
                    pause,
                )
            else:
                pause = 0.0


def deletions_consumer(
    runtime: Runtime[Any], settings: AuthSettings, service: AuthService
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The ``user.deleted`` consumer's loop, on a Valkey client of its own whose reply limit
    outlasts ``XREADGROUP … BLOCK``."""
    vk = settings.valkey
    blocking = vk.model_copy(
        update={"socket_timeout_s": settings.user_deletions.block_ms / 1000 + vk.socket_timeout_s}
    )
    consumer = UserDeletions(
        service,
        runtime.valkey(blocking),
        settings.user_deletions,
        stream=settings.outbox.stream,
    )
    return consumer.run
