"""Keyset pagination across created_at ties, and concurrent creates of one email."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import grpc

from portico.users.v1 import users_pb2

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


async def test_pages_walk_every_user_exactly_once_despite_created_at_ties(
    stub: UserServiceAsyncStub, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:  # 23 users over 3 instants: many share created_at, so only the id breaks ties
        await conn.execute(
            """
            INSERT INTO users.users (email, display_name, created_at)
            SELECT 'u' || n || '@example.com', 'User ' || n,
                   timestamptz '2024-01-01' + (n % 3) * interval '1 second'
            FROM generate_series(1, 23) AS n
            """
        )
        expected = [
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM users.users ORDER BY created_at, id")
        ]
    finally:
        await conn.close()

    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await stub.ListUsers(
            users_pb2.ListUsersRequest(page_size=5, page_token=token), timeout=5
        )
        seen += [u.id for u in page.users]
        sizes.append(len(page.users))
        token = page.next_page_token
        if not token:
            break

    assert seen == expected
    assert sizes == [5, 5, 5, 5, 3]


async def test_default_page_size_is_20_and_exact_fit_has_no_next_page(
    stub: UserServiceAsyncStub, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users.users (email, display_name)"
            " SELECT 'p' || n || '@example.com', 'P' FROM generate_series(1, 20) AS n"
        )
    finally:
        await conn.close()

    page = await stub.ListUsers(users_pb2.ListUsersRequest(), timeout=5)

    assert len(page.users) == 20
    assert page.next_page_token == ""


async def test_concurrent_creates_of_one_email_let_exactly_one_win(
    stub: UserServiceAsyncStub, database_url: str
) -> None:
    results = await asyncio.gather(
        *(
            stub.CreateUser(
                users_pb2.CreateUserRequest(email="race@example.com", display_name=f"#{i}"),
                timeout=10,
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )

    ok = [r for r in results if isinstance(r, users_pb2.CreateUserResponse)]
    codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert codes == [grpc.StatusCode.ALREADY_EXISTS] * 9
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users.users") == 1
    finally:
        await conn.close()
