"""``portico.users.v1.UserService``: proto in, domain call, proto out. Nothing else.

Validation happened in the interceptor; domain errors raised below are mapped to statuses by the
error interceptor; each call hands the store the time left to the caller's deadline.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import grpc

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_common.access import PRINCIPAL
from portico_users import codec
from portico_users.domain import UserStore
from portico_users.errors import NotFound
from portico_users.page_token import PAGE_TOKENS

Context = grpc.aio.ServicerContext[Any, Any]


def _actor() -> str | None:
    """Who is calling (the access token's user id, e.g. a user's UUID or "service:auth")."""
    principal = PRINCIPAL.get()
    return principal.user_id if principal is not None else None


class UserServicer(users_pb2_grpc.UserServiceServicer):
    """The UserService RPCs over a ``UserStore`` (the cache in front of the repository)."""

    def __init__(self, store: UserStore) -> None:
        self._store = store

    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: Context
    ) -> users_pb2.CreateUserResponse:
        user = await self._store.create_user(
            email=request.email,
            display_name=request.display_name,
            actor=_actor(),
            time_left=context.time_remaining(),
        )
        return users_pb2.CreateUserResponse(user=codec.user_to_proto(user))

    async def GetCurrentUser(
        self, request: users_pb2.GetCurrentUserRequest, context: Context
    ) -> users_pb2.GetCurrentUserResponse:
        principal = PRINCIPAL.get()  # set by the access interceptor: the rule needs a token
        try:
            user_id = UUID(principal.user_id) if principal is not None else None
        except ValueError:  # a service identity ("service:auth") is no user
            user_id = None
        if user_id is None:
            raise NotFound("the caller is not a user")
        user = await self._store.get_user(user_id=user_id, time_left=context.time_remaining())
        return users_pb2.GetCurrentUserResponse(user=codec.user_to_proto(user))

    async def GetUser(
        self, request: users_pb2.GetUserRequest, context: Context
    ) -> users_pb2.GetUserResponse:
        user = await self._store.get_user(
            user_id=codec.parse_user_id(request.id), time_left=context.time_remaining()
        )
        return users_pb2.GetUserResponse(user=codec.user_to_proto(user))

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        page = await self._store.list_users(
            page_size=codec.page_size_of(request),
            after=PAGE_TOKENS.decode(request.page_token),
            time_left=context.time_remaining(),
        )
        return users_pb2.ListUsersResponse(
            users=[codec.user_to_proto(user) for user in page.users],
            next_page_token=PAGE_TOKENS.encode(page.next_cursor) if page.next_cursor else "",
        )

    async def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: Context
    ) -> users_pb2.UpdateUserResponse:
        changes = codec.resolve_changes(
            mask_paths=codec.mask_paths_of(request), update=request.user
        )
        user = await self._store.update_user(
            user_id=codec.parse_user_id(request.id),
            changes=changes,
            etag=codec.parse_etag(request.etag),
            actor=_actor(),
            time_left=context.time_remaining(),
        )
        return users_pb2.UpdateUserResponse(user=codec.user_to_proto(user))

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: Context
    ) -> users_pb2.DeleteUserResponse:
        await self._store.delete_user(
            user_id=codec.parse_user_id(request.id),
            etag=codec.parse_etag(request.etag),
            actor=_actor(),
            time_left=context.time_remaining(),
        )
        return users_pb2.DeleteUserResponse()
