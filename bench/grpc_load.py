"""Direct gRPC load: ``python -m bench.grpc_load`` calls the users service without the gateway.

A small closed-loop driver (like wrk's connections): ``--concurrency`` tasks share one grpc.aio
channel (as the gateway does) and each calls the RPC back to back for ``--duration`` seconds,
timing every call. It prints one JSON line (latency percentiles in ms, requests, errors, and
its own CPU seconds). It is Python, so at high concurrency it can be the bottleneck itself:
its CPU per request is reported next to the servers'.

Operations: ``get`` (GetUser of the ids in ``--ids``, in turn), ``list`` (ListUsers, 20 per
page), ``create`` (CreateUser with unique emails), ``patch`` (UpdateUser with the etag of the
user's latest version; ``--ids`` lines are ``<id> <etag>``).

Every call carries ``authorization: Bearer <token>`` metadata, the token read from the
environment variable :data:`TOKEN_VARIABLE` (kept out of the command line); without it the calls
go unauthenticated, and the users service refuses them (counted as UNAUTHENTICATED errors).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2

from portico.users.v1 import users_pb2, users_pb2_grpc

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

Call = Callable[[], Awaitable[None]]
Metadata = tuple[tuple[str, str], ...]

TOKEN_VARIABLE = "BENCH_ACCESS_TOKEN"  # noqa: S105 (a variable's name, not a secret)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def _operation(
    stub: UserServiceAsyncStub, op: str, ids_file: Path | None, tag: str, metadata: Metadata
) -> Call:
    lines = ids_file.read_text().split() if ids_file is not None else []
    if op == "get":
        ids = itertools.cycle(lines)

        async def get() -> None:
            request = users_pb2.GetUserRequest(id=next(ids))
            await stub.GetUser(request, timeout=5, metadata=metadata)

        return get
    if op == "list":

        async def list_page() -> None:
            request = users_pb2.ListUsersRequest(page_size=20)
            await stub.ListUsers(request, timeout=5, metadata=metadata)

        return list_page
    if op == "create":
        counter = itertools.count(1)

        async def create() -> None:
            n = next(counter)
            request = users_pb2.CreateUserRequest(
                email=f"bench-{tag}-{n}@example.com", display_name=f"Bench User {n}"
            )
            await stub.CreateUser(request, timeout=5, metadata=metadata)

        return create
    if op == "patch":
        etags = dict(zip(lines[0::2], lines[1::2], strict=True))
        pool = itertools.cycle(list(etags))
        busy: set[str] = set()
        counter = itertools.count(1)

        async def patch() -> None:
            user_id = next(pool)
            while user_id in busy:  # its previous patch is still in flight
                user_id = next(pool)
            busy.add(user_id)
            request = users_pb2.UpdateUserRequest(
                id=user_id,
                user=users_pb2.UserUpdate(display_name=f"Bench Patch {next(counter)}"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                etag=etags[user_id],
            )
            try:
                reply = await stub.UpdateUser(request, timeout=5, metadata=metadata)
            finally:
                busy.discard(user_id)
            etags[user_id] = reply.user.etag

        return patch
    raise ValueError(f"unknown operation {op!r}")


async def drive(
    target: str,
    op: str,
    *,
    concurrency: int,
    duration_s: float,
    ids_file: Path | None,
    tag: str,
    token: str | None,
) -> dict[str, object]:
    """Run the closed loop and return the summary."""
    metadata: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 5)
        stub = users_pb2_grpc.UserServiceStub(channel)
        call = _operation(stub, op, ids_file, tag, metadata)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        deadline = 0.0

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                try:
                    await call()
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    continue
                latencies.append(time.perf_counter() - start)

        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline = t0 + duration_s
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(ms),
        "duration_s": elapsed,
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else 0.0,
        "max_ms": ms[-1] if ms else 0.0,
        "cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the users service")
    parser.add_argument("--op", choices=("get", "list", "create", "patch"), required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--ids", type=Path, help="ids (get) or '<id> <etag>' lines (patch)")
    parser.add_argument("--tag", default="grpc", help="makes created emails unique")
    args = parser.parse_args(argv)
    result = asyncio.run(
        drive(
            args.target,
            args.op,
            concurrency=args.concurrency,
            duration_s=args.duration,
            ids_file=args.ids,
            tag=args.tag,
            token=os.environ.get(TOKEN_VARIABLE),
        )
    )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
