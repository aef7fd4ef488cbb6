"""Calling the users service with Portico's generated, typed Python stubs (grpc.aio).

    PORTICO_TOKEN=<admin access token> python services/users/examples/stub_client.py 127.0.0.1:50051

Creates a user, reads it back, renames it with its etag, lists the first page and deletes it.
Every call carries the access token as ``authorization: Bearer <token>`` metadata; listing and
managing other users needs the ``admin`` role.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

import grpc
from google.protobuf import field_mask_pb2

from portico.users.v1 import users_pb2, users_pb2_grpc


async def main(target: str, token: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        auth = (("authorization", f"Bearer {token}"),)
        meta = (("x-request-id", uuid.uuid4().hex), *auth)
        created = await users.CreateUser(
            users_pb2.CreateUserRequest(
                email=f"grace-{uuid.uuid4().hex[:8]}@example.com", display_name="Grace Hopper"
            ),
            timeout=5,
            metadata=meta,
        )
        print("created:", created.user.id, created.user.email)
        got = await users.GetUser(
            users_pb2.GetUserRequest(id=created.user.id), timeout=5, metadata=auth
        )
        print("etag:", got.user.etag)
        updated = await users.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=got.user.id,
                user=users_pb2.UserUpdate(display_name="Rear Admiral Hopper"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                etag=got.user.etag,
            ),
            timeout=5,
            metadata=auth,
        )
        print("renamed:", updated.user.display_name, "etag:", updated.user.etag)
        page = await users.ListUsers(
            users_pb2.ListUsersRequest(page_size=5), timeout=5, metadata=auth
        )
        print("first page:", [u.email for u in page.users])
        await users.DeleteUser(
            users_pb2.DeleteUserRequest(id=got.user.id), timeout=5, metadata=auth
        )
        try:
            await users.GetUser(users_pb2.GetUserRequest(id=got.user.id), timeout=5, metadata=auth)
        except grpc.aio.AioRpcError as exc:
            print("after delete:", exc.code().name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="127.0.0.1:50051")
    parser.add_argument(
        "--token",
        default=os.environ.get("PORTICO_TOKEN", ""),
        help="admin access token (default: $PORTICO_TOKEN)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.target, args.token))
