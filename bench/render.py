"""``python -m bench.render``: what turning a response message into JSON costs in the gateway.

Times, in one process and interleaved, json_format's generic ``MessageToDict`` (what the gateway
used) against the compiled writer of :mod:`portico_gateway.transcoding.json_out` (what it uses),
each followed by the same ``json.dumps`` Starlette's ``JSONResponse`` does, for a GetUserResponse
(the cached GET) and a ListUsersResponse page of 20 (the list route). Checks that both give the
same bytes. Prints µs per response (median of ``--rounds``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from portico.users.v1 import users_pb2
from portico_gateway.transcoding.json_out import generic, to_dict


def _user(user: users_pb2.User, i: int) -> None:
    now = dt.datetime(2026, 11, 26, 2, 52, 9, 123456, tzinfo=dt.UTC)
    user.id, user.email, user.display_name = str(uuid.uuid4()), f"u{i}@example.com", f"User {i}"
    user.create_time.FromDatetime(now)
    user.update_time.FromDatetime(now)
    user.etag = uuid.uuid4().hex


def samples() -> dict[str, Message]:
    one = users_pb2.GetUserResponse()
    _user(one.user, 0)
    page = users_pb2.ListUsersResponse(next_page_token="t" * 44)
    for i in range(20):
        _user(page.users.add(), i)
    return {"GetUserResponse (1 user)": one, "ListUsersResponse (20 users)": page}


def _encode(convert: Callable[[Message], dict[str, Any]], message: Message) -> bytes:
    content = convert(message)  # then what starlette.responses.JSONResponse.render does
    text = json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    )
    return text.encode("utf-8")


def _time(convert: Callable[[Message], dict[str, Any]], message: Message, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        _encode(convert, message)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="responses per round")
    args = parser.parse_args()
    print("| response | json_format µs | compiled µs | compiled ÷ json_format |")
    print("|---|--:|--:|--:|")
    for name, message in samples().items():
        if json.loads(_encode(generic, message)) != json.loads(_encode(to_dict, message)):
            raise SystemExit(f"{name}: the compiled writer disagrees with json_format")
        before: list[float] = []
        after: list[float] = []
        for _ in range(args.rounds):  # interleaved, so drift hits both
            before.append(_time(generic, message, args.calls))
            after.append(_time(to_dict, message, args.calls))
        b, a = statistics.median(before), statistics.median(after)
        print(f"| {name} | {b:.1f} | {a:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
