"""Translation between ``portico.users.v1`` messages and the domain, including the rules that
are about the messages themselves: ids as strings, ``update_mask`` resolution, default page size.

Field rules (email format, lengths, page_size range …) are checked before any of this runs, by
the protovalidate interceptor; what is checked here is what the proto cannot express.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from portico.users.v1 import users_pb2
from portico_users.domain import User, UserChanges, version_from_etag
from portico_users.errors import FieldViolation, InvalidArgument

#: Page size when the request leaves ``page_size`` unset.
DEFAULT_PAGE_SIZE = 20
#: ``update_mask`` paths UpdateUser accepts, in the order they are reported.
UPDATABLE_PATHS = ("email", "display_name")


def user_to_proto(user: User) -> users_pb2.User:
    """The wire form of a user."""
    create_time, update_time = Timestamp(), Timestamp()
    create_time.FromDatetime(user.created_at)
    update_time.FromDatetime(user.updated_at)
    return users_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        create_time=create_time,
        update_time=update_time,
        etag=user.etag,
    )


def user_from_proto(message: users_pb2.User) -> User:
    """The inverse of ``user_to_proto`` (used by the cache, which stores the wire form)."""
    version = version_from_etag(message.etag)
    if version is None:
        raise ValueError("cached user has no valid etag")
    return User(
        id=UUID(message.id),
        email=message.email,
        display_name=message.display_name,
        created_at=message.create_time.ToDatetime(tzinfo=UTC),
        updated_at=message.update_time.ToDatetime(tzinfo=UTC),
        version=version,
    )


def parse_user_id(value: str, *, field: str = "id") -> UUID:
    """A user id from the request (already checked to look like a UUID by protovalidate)."""
    try:
        return UUID(value)
    except ValueError:
        raise InvalidArgument.for_field(field, "must be a valid UUID") from None


def parse_etag(value: str) -> str | None:
    """The etag condition of a write: None (unconditional) for the empty string."""
    return value or None


def page_size_of(request: users_pb2.ListUsersRequest) -> int:
    """The requested page size, or the default when unset."""
    return request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE


def resolve_changes(
    *, mask_paths: Sequence[str] | None, update: users_pb2.UserUpdate
) -> UserChanges:
    """The changes an UpdateUser request asks for.

    With no mask (or an empty one), every field set in ``update`` applies. With a mask, exactly
    the named fields apply, and each must be set in ``update``. Unknown paths, masked fields that
    are unset, and requests that change nothing are INVALID_ARGUMENT on ``update_mask``.
    """
    provided = {"email": update.HasField("email"), "display_name": update.HasField("display_name")}
    violations: list[FieldViolation] = []
    if mask_paths:
        paths = list(dict.fromkeys(mask_paths))
        for path in paths:
            if path not in provided:
                allowed = ", ".join(UPDATABLE_PATHS)
                violations.append(
                    FieldViolation("update_mask", f"unknown path {path!r}; allowed: {allowed}")
                )
            elif not provided[path]:
                violations.append(
                    FieldViolation(
                        "update_mask", f"path {path!r} names user.{path}, which is unset"
                    )
                )
        selected = [p for p in paths if provided.get(p)]
    else:
        selected = [p for p in UPDATABLE_PATHS if provided[p]]
    if not selected and not violations:
        violations.append(
            FieldViolation("update_mask", "nothing to update: set at least one field of user")
        )
    if violations:
        raise InvalidArgument(violations)
    return UserChanges(
        email=update.email if "email" in selected else None,
        display_name=update.display_name if "display_name" in selected else None,
    )


def mask_paths_of(request: users_pb2.UpdateUserRequest) -> Sequence[str] | None:
    """The request's ``update_mask`` paths, or None when the mask is unset."""
    return list(request.update_mask.paths) if request.HasField("update_mask") else None
