"""UserService over a real grpc.aio server, PostgreSQL and Valkey: happy paths and domain errors."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from portico.users.v1 import users_pb2
from tests.support.users import error_info, field_violations

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

ETAG = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def create(stub: UserServiceAsyncStub, email: str, name: str = "Ada") -> users_pb2.User:
    response = await stub.CreateUser(
        users_pb2.CreateUserRequest(email=email, display_name=name), timeout=5
    )
    return response.user


async def test_create_then_get_returns_the_stored_user(stub: UserServiceAsyncStub) -> None:
    created = await create(stub, "Ada@Example.com", "Ada Lovelace")

    got = (await stub.GetUser(users_pb2.GetUserRequest(id=created.id), timeout=5)).user

    assert uuid.UUID(created.id)
    assert created.email == "Ada@Example.com"  # stored as given
    assert created.display_name == "Ada Lovelace"
    assert ETAG.fullmatch(created.etag)
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time
    assert got == created


async def test_create_rejects_an_email_taken_in_another_case(stub: UserServiceAsyncStub) -> None:
    await create(stub, "ada@example.com")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(stub, "ADA@EXAMPLE.COM")

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_get_returns_not_found_for_unknown_id(stub: UserServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(users_pb2.GetUserRequest(id=str(uuid.uuid4())), timeout=5)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_update_with_mask_changes_only_masked_fields(stub: UserServiceAsyncStub) -> None:
    user = await create(stub, "grace@example.com", "Grace")

    updated = (
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=user.id,
                user=users_pb2.UserUpdate(email="g@example.com", display_name="Grace Hopper"),
                update_mask=FieldMask(paths=["display_name"]),
                etag=user.etag,
            ),
            timeout=5,
        )
    ).user

    assert updated.display_name == "Grace Hopper"
    assert updated.email == "grace@example.com"
    assert updated.etag != user.etag
    assert ETAG.fullmatch(updated.etag)
    assert updated.update_time.ToDatetime() > user.update_time.ToDatetime()
    got = (await stub.GetUser(users_pb2.GetUserRequest(id=user.id), timeout=5)).user
    assert got == updated


async def test_update_without_mask_applies_every_set_field(stub: UserServiceAsyncStub) -> None:
    user = await create(stub, "linus@example.com", "Linus")

    updated = (
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(id=user.id, user=users_pb2.UserUpdate(email="l@x.org")),
            timeout=5,
        )
    ).user

    assert (updated.email, updated.display_name) == ("l@x.org", "Linus")


async def test_update_to_a_taken_email_is_already_exists(stub: UserServiceAsyncStub) -> None:
    await create(stub, "one@example.com")
    two = await create(stub, "two@example.com")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=two.id, user=users_pb2.UserUpdate(email="ONE@example.com")
            ),
            timeout=5,
        )

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_update_with_a_stale_etag_fails_precondition(stub: UserServiceAsyncStub) -> None:
    user = await create(stub, "ken@example.com", "Ken")
    change = users_pb2.UserUpdate(display_name="Ken T")
    await stub.UpdateUser(users_pb2.UpdateUserRequest(id=user.id, user=change), timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(id=user.id, user=change, etag=user.etag), timeout=5
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.domain) == ("ETAG_MISMATCH", "users.portico.dev")


@pytest.mark.parametrize("etag", ["not-an-etag", "AAAAAAAAAAA", "x"])
async def test_a_foreign_etag_never_matches(stub: UserServiceAsyncStub, etag: str) -> None:
    user = await create(stub, "foreign@example.com")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id, etag=etag), timeout=5)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_update_of_unknown_user_is_not_found_even_with_an_etag(
    stub: UserServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=str(uuid.uuid4()),
                user=users_pb2.UserUpdate(display_name="x"),
                etag="AAAAAAAAAAE",
            ),
            timeout=5,
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_with_current_etag_removes_the_user(stub: UserServiceAsyncStub) -> None:
    user = await create(stub, "del@example.com")

    await stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id, etag=user.etag), timeout=5)

    for call in (
        stub.GetUser(users_pb2.GetUserRequest(id=user.id), timeout=5),
        stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_returns_users_oldest_first(stub: UserServiceAsyncStub) -> None:
    created = [await create(stub, f"u{i}@example.com", f"User {i}") for i in range(3)]

    page = await stub.ListUsers(users_pb2.ListUsersRequest(), timeout=5)

    assert list(page.users) == created
    assert page.next_page_token == ""


async def test_unknown_mask_path_is_invalid_argument_on_update_mask(
    stub: UserServiceAsyncStub,
) -> None:
    user = await create(stub, "mask@example.com")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=user.id,
                user=users_pb2.UserUpdate(display_name="New"),
                update_mask=FieldMask(paths=["display_name", "id"]),
            ),
            timeout=5,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(caught.value)] == ["update_mask"]
    assert "'id'" in field_violations(caught.value)[0][1]
