"""What repositories share: a row made into a dataclass, the outbox INSERT of a schema."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from portico_common.outbox import OUTBOX_COLUMNS, new_event, outbox_insert
from portico_common.postgres import from_row


@dataclass(frozen=True)
class Thing:
    id: uuid.UUID
    name: str
    state: str = "new"


def test_from_row_takes_each_field_from_its_column_and_ignores_other_columns() -> None:
    thing_id = uuid.uuid4()
    row = {"id": thing_id, "name": "a", "state": "old", "extra": 1}
    assert from_row(Thing, row) == Thing(thing_id, "a", "old")


def test_from_row_takes_given_values_instead_of_their_columns() -> None:
    row = {"id": uuid.uuid4(), "name": "a", "state": "OLD"}
    assert from_row(Thing, row, state="old").state == "old"


def test_from_row_fails_on_a_missing_column() -> None:
    with pytest.raises(KeyError, match="state"):
        from_row(Thing, {"id": uuid.uuid4(), "name": "a"})


def test_outbox_insert_writes_an_event_row_into_the_schemas_outbox() -> None:
    query = outbox_insert("users")
    assert re.search(rf"INSERT INTO users\.outbox \({OUTBOX_COLUMNS}\)", query)
    event = new_event("thing.made", subject="s", actor=None)
    placeholders = re.findall(r"\$(\d+)", query)
    assert [int(n) for n in placeholders] == list(range(1, len(event.row()) + 1))
    assert len(OUTBOX_COLUMNS.split(",")) == len(event.row())


@pytest.mark.parametrize("schema", ["", "users.outbox", "users; DROP TABLE x", "Users", "1st"])
def test_outbox_insert_refuses_what_is_not_a_plain_schema_name(schema: str) -> None:
    with pytest.raises(ValueError, match="not a schema name"):
        outbox_insert(schema)
