"""The users service as the auth service sees it: ``portico.users.v1.UserService`` over gRPC.

One long-lived channel (``AUTH_USERS_TARGET``); every call has the ``users_timeout_s``
deadline and the auth service's own access token (:mod:`portico_auth.identity`, role
``provisioner``); a refused token (UNAUTHENTICATED) is renewed and the call made once more.
Outcomes the auth service acts on are returned or raised as domain errors: ALREADY_EXISTS
→ ``AlreadyExists``, NOT_FOUND → ``None``/``False``, anything else
(UNAVAILABLE, DEADLINE_EXCEEDED …) → ``Unavailable``, whose outcome may be unknown: a create
that timed out may still have happened, which is why sign-up can *adopt* a user (see service.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import grpc

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_auth.domain import UserRef
from portico_auth.errors import AlreadyExists, Unavailable
from portico_auth.identity import ServiceIdentity

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

_log = logging.getLogger(__name__)
_PAGE_SIZE = 100
_Reply = TypeVar("_Reply")


def _ref(user: users_pb2.User) -> UserRef:
    return UserRef(
        id=UUID(user.id), email=user.email, created_at=user.create_time.ToDatetime(tzinfo=UTC)
    )


def _unavailable(method: str, error: grpc.aio.AioRpcError) -> Unavailable:
    _log.warning("users service %s: %s %s", method, error.code().name, error.details())
    return Unavailable()


class UsersClient:
    """The few UserService calls sign-up and login need."""

    def __init__(
        self, channel: grpc.aio.Channel, identity: ServiceIdentity, *, timeout_s: float
    ) -> None:
        self._stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
        self._identity = identity
        self._timeout = timeout_s

    async def _call(self, method: Callable[..., Awaitable[_Reply]], request: Any) -> _Reply:
        """``method(request)`` with the deadline and the service token (renewed once if refused)."""
        for attempt in (1, 2):
            metadata = await self._identity.metadata()
            try:
                return await method(request, timeout=self._timeout, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED or attempt == 2:
                    raise
                _log.warning("users service refused the service token (%s)", error.details())
                self._identity.invalidate()
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_user(self, *, email: str, display_name: str) -> UserRef:
        request = users_pb2.CreateUserRequest(email=email, display_name=display_name)
        try:
            response = await self._call(self._stub.CreateUser, request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise AlreadyExists() from error
            raise _unavailable("CreateUser", error) from error
        return _ref(response.user)

    async def get_user(self, user_id: UUID) -> UserRef | None:
        try:
            response = await self._call(
                self._stub.GetUser, users_pb2.GetUserRequest(id=str(user_id))
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable("GetUser", error) from error
        return _ref(response.user)

    async def delete_user(self, user_id: UUID) -> None:
        """Delete a user; already gone counts as done."""
        try:
            await self._call(self._stub.DeleteUser, users_pb2.DeleteUserRequest(id=str(user_id)))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise _unavailable("DeleteUser", error) from error

    async def find_by_email(self, email: str) -> UserRef | None:
        """The user with that email (case-insensitive), by paging through ListUsers.

        Linear in the number of users: used only to recover a sign-up whose CreateUser outcome
        was lost (UserService has no lookup by email and no idempotent create yet).
        """
        wanted = email.lower()
        token = ""
        while True:
            request: Any = users_pb2.ListUsersRequest(page_size=_PAGE_SIZE, page_token=token)
            try:
                page = await self._call(self._stub.ListUsers, request)
            except grpc.aio.AioRpcError as error:
                raise _unavailable("ListUsers", error) from error
            for user in page.users:
                if user.email.lower() == wanted:
                    return _ref(user)
            if not page.next_page_token:
                return None
            token = page.next_page_token
