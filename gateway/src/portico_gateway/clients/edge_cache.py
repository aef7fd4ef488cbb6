"""The edge path's reader of the owning service's cache (``portico.edge.v1.cacheable`` reads).

One ``HMGET <prefix><key> v d`` per read, on the cache instance, as the gateway's read-only ACL
user. The owner keeps each entry as ``{v: version, d: bytes}`` and buries a deleted resource
under ``{v: "deleted"}`` (``proto/portico/edge/v1/edge.proto``); what the read finds:

* ``hit``: ``d`` decodes as the binding's result message: the gateway answers with it;
* ``miss``: no entry;
* ``tombstone``: the resource was deleted (the service answers NOT_FOUND);
* ``error``: Valkey failed or timed out, or the entry cannot be decoded.

Everything but a hit returns None, and the caller sends the RPC to the service as if this
reader did not exist. Nothing is kept in the process: every hit is what Valkey holds at that
moment, which the owner updates before it answers a write (read-your-writes on every replica).
Failures are logged once per outage. ``portico_gateway_edge_reads_total{result}`` counts the
reads.
"""

from __future__ import annotations

import functools
import logging

from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter
from valkey.asyncio import Valkey
from valkey.exceptions import ValkeyError

from portico_common.logs import OutageLog

_log = logging.getLogger(__name__)

#: The ``v`` of a deleted resource's entry (the users service's ``cache.py``).
TOMBSTONE = b"deleted"
RESULTS = ("hit", "miss", "tombstone", "error")
_FAILURES = (ValkeyError, OSError, DecodeError, ValueError)


@functools.cache
def edge_reads() -> Counter:
    """``portico_gateway_edge_reads_total{result}`` (created once per process, every result at 0
    from the start so that a rule's ``rate()`` has a series to read)."""
    counter = Counter(
        "portico_gateway_edge_reads",
        "Cacheable reads the gateway looked up in the owner's cache, by result "
        "(hit: answered by the gateway; miss, tombstone, error: sent to the service).",
        ["result"],
    )
    for result in RESULTS:
        counter.labels(result)
    return counter


class EdgeCache:
    """Looks cacheable reads up in the owner's Valkey cache; see the module doc."""

    def __init__(self, client: Valkey, *, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix
        reads = edge_reads()
        self._counts = {result: reads.labels(result) for result in RESULTS}
        self._outage = OutageLog(
            _log,
            down="edge cache read failed, reads go to the services: %s: %s",
            up="edge cache answers again",
        )

    async def read(self, key: str, result_class: type[Message]) -> Message | None:
        """The cached resource at ``key`` as a ``result_class`` message; None if not served."""
        try:
            version, data = await self._client.hmget(self._prefix + key, ["v", "d"])  # type: ignore[misc]
            if version is None:
                result = "miss"
            elif version == TOMBSTONE:
                result = "tombstone"
            else:
                message = _decoded(data, result_class)
                self._counts["hit"].inc()
                self._outage.succeeded()
                return message
        except _FAILURES as exc:
            self._counts["error"].inc()
            self._outage.failed(exc)
            return None
        self._counts[result].inc()
        self._outage.succeeded()
        return None


def _decoded(data: bytes | None, result_class: type[Message]) -> Message:
    """The entry's resource; ValueError for what the owner never writes (no data, no etag)."""
    if not data:
        raise ValueError("entry without data")
    message = result_class.FromString(data)
    if "etag" in message.DESCRIPTOR.fields_by_name and not getattr(message, "etag"):  # noqa: B009
        raise ValueError("entry without an etag")
    return message
