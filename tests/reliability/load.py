"""A steady, bounded load of mixed reads and writes through the gateway, and what became of it.

:class:`Load` starts one request every ``1 / rate_per_s`` seconds for ``duration_s`` seconds, so a
drill sends at most ``rate_per_s * duration_s`` requests, all to the gateway on 127.0.0.1:

* **create** (30 %): ``POST /v1/users`` as the admin, with an ``Idempotency-Key``;
* **read** (40 %): ``GET /v1/users/{id}`` of a user whose create was acknowledged;
* **patch** (30 %): ``PATCH /v1/users/{id}`` with a new ``display_name``, at most one in flight
  per user (so "the last acknowledged value" is well defined).

No request is retried: every outcome is counted. Each request is sent on a new connection
(``Connection: close``), so a refused connection always means "no gateway listened" and never
"an idle keep-alive connection was closed under us".

Every request lands in exactly one class (:class:`Outcome`):

``ok``
    2xx.
``retryable``
    A clean, retryable refusal: 503 with ``Retry-After``, 504, or 429 with ``Retry-After``, each
    an ``application/problem+json`` body. Nothing was done, or the client may retry safely
    (creates carry an ``Idempotency-Key``).
``refused``
    The TCP connection was refused: no gateway was listening (between a gateway's exit and its
    successor's start). The request was never accepted.
``unaccepted``
    The connection was reset before the gateway read the request: a transport error whose
    ``X-Request-ID`` appears in no gateway log (the connection sat in the kernel's accept queue
    when the listener closed). Never accepted, like ``refused``.
``failed``
    Anything else: any other status (a 5xx other than the two above, any 4xx — 401 included:
    sessions survive every drill), a timeout, or a transport error of a request some gateway
    logged (an accepted request that was cut off).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

#: Longest a single request may take before it counts as failed (bounded drills).
REQUEST_TIMEOUT_S = 10.0


class Outcome(StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"
    REFUSED = "refused"
    UNACCEPTED = "unaccepted"
    FAILED = "failed"


def classify(response: httpx.Response) -> Outcome:
    if response.is_success:
        return Outcome.OK
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    retry_after = "retry-after" in response.headers
    if problem and (
        response.status_code == 504 or (response.status_code in (429, 503) and retry_after)
    ):
        return Outcome.RETRYABLE
    return Outcome.FAILED


@dataclass
class Sent:
    """One request and its outcome."""

    kind: str
    request_id: str
    at_s: float
    outcome: Outcome | None = None
    status: int | None = None
    error: str = ""
    body: str = ""
    #: When its answer (or error) came, seconds into the load.
    done_s: float | None = None


@dataclass
class Ledger:
    """What the clients were told: acknowledged creates and the values each user may hold now."""

    #: user id -> the last acknowledged display_name.
    acked: dict[str, str] = field(default_factory=dict)
    #: user id -> display_names sent after the last acknowledgement whose outcome is unknown
    #: (a timeout or a cut connection may have committed them).
    uncertain: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    #: user ids with a patch in flight.
    busy: set[str] = field(default_factory=set)


class Load:
    """Runs the load; ``sent`` and ``ledger`` hold the results afterwards."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rate_per_s: float = 40.0,
        duration_s: float = 10.0,
        seed: int = 7,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.random = random.Random(seed)
        self.sent: list[Sent] = []
        self.ledger = Ledger()
        self.started_at = 0.0
        self._serial = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    async def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0, max_connections=200)
        headers = {"Authorization": f"Bearer {self.token}", "Connection": "close"}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S
        ) as client:
            self.started_at = time.monotonic()
            tasks: list[asyncio.Task[None]] = []
            total = int(self.rate_per_s * self.duration_s)
            for n in range(total):
                delay = self.started_at + n / self.rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(client)))
            await asyncio.gather(*tasks)

    def _pick(self) -> str:
        roll = self.random.random()
        idle = [u for u in self.ledger.acked if u not in self.ledger.busy]
        if roll < 0.3 or not self.ledger.acked:
            return "create"
        if roll < 0.7 or not idle:
            return "read"
        return "patch"

    async def _one(self, client: httpx.AsyncClient) -> None:
        kind = self._pick()
        self._serial += 1
        sent = Sent(kind, uuid.uuid4().hex, self.elapsed())
        self.sent.append(sent)
        rid = {"X-Request-ID": sent.request_id}
        on_done: Callable[[httpx.Response | None], None]
        if kind == "create":
            name = f"Drill {self._serial}"
            body = {"email": f"drill-{uuid.uuid4().hex[:12]}@example.com", "display_name": name}
            request = client.post(
                "/v1/users", json=body, headers=rid | {"Idempotency-Key": str(uuid.uuid4())}
            )

            def on_done(reply: httpx.Response | None) -> None:
                if reply is not None and reply.status_code == 201:
                    self.ledger.acked[str(reply.json()["id"])] = name

        elif kind == "read":
            user_id = self.random.choice(list(self.ledger.acked))
            request = client.get(f"/v1/users/{user_id}", headers=rid)

            def on_done(reply: httpx.Response | None) -> None:
                return None

        else:
            user_id = self.random.choice(
                [u for u in self.ledger.acked if u not in self.ledger.busy]
            )
            self.ledger.busy.add(user_id)
            name = f"Patched {self._serial}"
            request = client.patch(f"/v1/users/{user_id}", json={"display_name": name}, headers=rid)

            def on_done(reply: httpx.Response | None) -> None:
                self.ledger.busy.discard(user_id)
                if reply is not None and reply.status_code == 200:
                    self.ledger.acked[user_id] = name
                    self.ledger.uncertain.pop(user_id, None)
                elif reply is None or reply.status_code >= 500:
                    self.ledger.uncertain[user_id].append(name)

        try:
            reply = await request
        except httpx.ConnectError as exc:
            sent.done_s = self.elapsed()
            sent.outcome, sent.error = Outcome.REFUSED, repr(exc)
            on_done(None)
            return
        except httpx.HTTPError as exc:
            sent.done_s = self.elapsed()
            sent.outcome, sent.error = Outcome.FAILED, repr(exc)  # may be reclassified later
            on_done(None)
            return
        sent.done_s = self.elapsed()
        sent.status = reply.status_code
        sent.outcome = classify(reply)
        if sent.outcome is not Outcome.OK:
            sent.body = reply.text[:300]
        on_done(reply)

    def reclassify_unaccepted(self, gateway_logs: str) -> None:
        """Transport errors of requests no gateway ever logged were never accepted."""
        for sent in self.sent:
            if (
                sent.outcome is Outcome.FAILED
                and sent.status is None
                and "Timeout" not in sent.error
                and sent.request_id not in gateway_logs
            ):
                sent.outcome = Outcome.UNACCEPTED

    def summary(self) -> dict[str, Any]:
        counts = collections.Counter(str(s.outcome) for s in self.sent)
        statuses = collections.Counter(
            f"{s.kind} {s.status or s.error.split('(')[0]}" for s in self.sent
        )
        failures = [
            {
                "kind": s.kind,
                "at_s": round(s.at_s, 2),
                "status": s.status,
                "error": s.error,
                "body": s.body,
                "request_id": s.request_id,
            }
            for s in self.sent
            if s.outcome is Outcome.FAILED
        ]
        not_ok = [s.at_s for s in self.sent if s.outcome is not Outcome.OK]
        last_not_ok = [s for s in self.sent if s.outcome is not Outcome.OK][-5:]
        return {
            "sent": len(self.sent),
            "succeeded": counts[Outcome.OK],
            "retryable": counts[Outcome.RETRYABLE],
            "refused": counts[Outcome.REFUSED],
            "unaccepted": counts[Outcome.UNACCEPTED],
            "failed": counts[Outcome.FAILED],
            "by_kind_and_status": dict(sorted(statuses.items())),
            "acknowledged_creates": len(self.ledger.acked),
            "first_not_ok_s": round(min(not_ok), 2) if not_ok else None,
            "last_not_ok_s": round(max(not_ok), 2) if not_ok else None,
            "failures": failures[:20],
            # The last requests that did not succeed, with their answers: what a late failure
            # was (the service's refusal, the gateway's own, a timeout) when recovery is slow.
            "last_not_ok": [
                {
                    "kind": s.kind,
                    "at_s": round(s.at_s, 2),
                    "status": s.status,
                    "error": s.error,
                    "body": s.body,
                    "request_id": s.request_id,
                }
                for s in last_not_ok
            ],
        }
