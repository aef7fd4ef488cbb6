"""Codec: proto <-> domain, etags, update-mask resolution."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from portico.users.v1 import users_pb2
from portico_users.codec import (
    DEFAULT_PAGE_SIZE,
    page_size_of,
    parse_etag,
    parse_user_id,
    resolve_changes,
    user_from_proto,
    user_to_proto,
)
from portico_users.domain import User, UserChanges, etag_for, version_from_etag
from portico_users.errors import InvalidArgument

USER = User(
    id=uuid4(),
    email="Ada@Example.com",
    display_name="Ada",
    created_at=datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    updated_at=datetime(2024, 2, 2, 3, 4, 5, 1, tzinfo=UTC),
    version=42,
)


def test_a_user_survives_the_wire_form_exactly() -> None:
    message = user_to_proto(USER)

    assert message.id == str(USER.id)
    assert message.etag == USER.etag
    assert user_from_proto(users_pb2.User.FromString(message.SerializeToString())) == USER


@pytest.mark.parametrize("version", [1, 2, 255, 2**40, 2**63 - 1])
def test_etags_are_short_ascii_tokens_that_name_their_version(version: int) -> None:
    etag = etag_for(version)

    assert len(etag) == 11
    assert etag.isascii()
    assert version_from_etag(etag) == version


@pytest.mark.parametrize("etag", ["", "x", "AAAAAAAAAAA", "not-an-etag", "AAAAAAAAAA=", "/" * 11])
def test_foreign_etags_name_no_version(etag: str) -> None:
    assert version_from_etag(etag) is None


def test_every_update_changes_the_etag() -> None:
    assert len({etag_for(v) for v in range(1, 1000)}) == 999


def test_empty_etag_means_unconditional() -> None:
    assert parse_etag("") is None
    assert parse_etag("AAAAAAAAAAE") == "AAAAAAAAAAE"


def test_malformed_ids_are_invalid_argument_on_id() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_user_id("nope")

    assert [v.field for v in caught.value.violations] == ["id"]


def test_page_size_defaults_only_when_unset() -> None:
    assert page_size_of(users_pb2.ListUsersRequest()) == DEFAULT_PAGE_SIZE == 20
    assert page_size_of(users_pb2.ListUsersRequest(page_size=7)) == 7


Update = users_pb2.UserUpdate


@pytest.mark.parametrize(
    ("mask", "update", "expected"),
    [
        (None, Update(email="a@b.co"), UserChanges(email="a@b.co")),
        (None, Update(email="a@b.co", display_name="N"), UserChanges("a@b.co", "N")),
        ([], Update(display_name="N"), UserChanges(display_name="N")),
        (["display_name"], Update(email="a@b.co", display_name="N"), UserChanges(None, "N")),
        (["email", "email"], Update(email="a@b.co"), UserChanges(email="a@b.co")),
    ],
)
def test_mask_resolution_applies_the_named_or_set_fields(
    mask: list[str] | None, update: users_pb2.UserUpdate, expected: UserChanges
) -> None:
    assert resolve_changes(mask_paths=mask, update=update) == expected


@pytest.mark.parametrize(
    ("mask", "update", "fragment"),
    [
        (None, Update(), "nothing to update"),
        ([], Update(), "nothing to update"),
        (["email"], Update(display_name="N"), "'email'"),
        (["nickname"], Update(display_name="N"), "unknown path 'nickname'"),
        (["*"], Update(display_name="N"), "unknown path '*'"),
        (["user.email"], Update(email="a@b.co"), "unknown path 'user.email'"),
    ],
)
def test_bad_masks_are_invalid_argument_on_update_mask(
    mask: list[str] | None, update: users_pb2.UserUpdate, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_changes(mask_paths=mask, update=update)

    violations = caught.value.violations
    assert {v.field for v in violations} == {"update_mask"}
    assert any(fragment in v.description for v in violations)
