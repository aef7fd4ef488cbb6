"""Bad input over gRPC: INVALID_ARGUMENT with google.rpc.BadRequest field violations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from portico.users.v1 import users_pb2
from portico_users.domain import Cursor
from portico_users.page_token import PAGE_TOKENS
from tests.support.users import field_violations

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

ID = str(uuid.uuid4())
Update = users_pb2.UserUpdate


def _token() -> str:
    return PAGE_TOKENS.encode(Cursor(datetime(2024, 1, 1, tzinfo=UTC), uuid.uuid4()))


def _tampered() -> str:
    token = _token()
    return token[:5] + ("A" if token[5] != "A" else "B") + token[6:]


CASES = [
    pytest.param(
        "CreateUser",
        users_pb2.CreateUserRequest(email="nope", display_name="A"),
        {"email"},
        id="CreateUser-invalid-email",
    ),
    pytest.param(
        "CreateUser",
        users_pb2.CreateUserRequest(email="a@b.co", display_name=""),
        {"display_name"},
        id="CreateUser-empty-name",
    ),
    pytest.param(
        "CreateUser",
        users_pb2.CreateUserRequest(email="a@b.co", display_name=" \t "),
        {"display_name"},
        id="CreateUser-blank-name",
    ),
    pytest.param(
        "CreateUser",
        users_pb2.CreateUserRequest(email="a@b.co", display_name="x" * 101),
        {"display_name"},
        id="CreateUser-101-char-name",
    ),
    pytest.param(
        "CreateUser",
        users_pb2.CreateUserRequest(email="", display_name=""),
        {"email", "display_name"},
        id="CreateUser-both-bad",
    ),
    pytest.param(
        "GetUser", users_pb2.GetUserRequest(id="123"), {"id"}, id="GetUser-malformed-uuid"
    ),
    pytest.param(
        "DeleteUser",
        users_pb2.DeleteUserRequest(id="not-a-uuid"),
        {"id"},
        id="DeleteUser-malformed-uuid",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_size=0),
        {"page_size"},
        id="ListUsers-page_size-0",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_size=101),
        {"page_size"},
        id="ListUsers-page_size-101",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_size=-1),
        {"page_size"},
        id="ListUsers-page_size--1",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_token="!!not a token!!"),
        {"page_token"},
        id="ListUsers-garbage-token",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_token=_tampered()),
        {"page_token"},
        id="ListUsers-tampered-token",
    ),
    pytest.param(
        "ListUsers",
        users_pb2.ListUsersRequest(page_token=_token()[:-3]),
        {"page_token"},
        id="ListUsers-truncated-token",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(id=ID, user=Update(display_name="  ")),
        {"user.display_name"},
        id="UpdateUser-blank-name",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(id=ID, user=Update(display_name="x" * 101)),
        {"user.display_name"},
        id="UpdateUser-101-char-name",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(id=ID, user=Update(email="@")),
        {"user.email"},
        id="UpdateUser-bad-email",
    ),
    pytest.param(
        "UpdateUser", users_pb2.UpdateUserRequest(id=ID), {"user"}, id="UpdateUser-no-user"
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(id=ID, user=Update()),
        {"update_mask"},
        id="UpdateUser-nothing-set",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(
            id=ID, user=Update(email="a@b.co"), update_mask=FieldMask(paths=["display_name"])
        ),
        {"update_mask"},
        id="UpdateUser-masked-but-unset",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(
            id=ID, user=Update(email="a@b.co"), update_mask=FieldMask(paths=["nickname"])
        ),
        {"update_mask"},
        id="UpdateUser-unknown-path",
    ),
    pytest.param(
        "UpdateUser",
        users_pb2.UpdateUserRequest(id=ID, user=Update(email="a@b.co"), etag="e" * 65),
        {"etag"},
        id="UpdateUser-etag-too-long",
    ),
]


@pytest.mark.parametrize(("method", "request_", "expected"), CASES)
async def test_bad_input_is_invalid_argument_with_field_violations(
    stub: UserServiceAsyncStub, method: str, request_: Any, expected: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request_, timeout=5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert {field for field, _ in violations} == expected
    assert all(description for _, description in violations)


async def test_violation_descriptions_are_human_messages(stub: UserServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateUser(
            users_pb2.CreateUserRequest(email="nope", display_name="x" * 101), timeout=5
        )

    assert dict(field_violations(caught.value)) == {
        "email": "must be a valid email address",
        "display_name": "must be at most 100 characters",
    }
