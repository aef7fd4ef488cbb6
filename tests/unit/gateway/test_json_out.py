"""The compiled response writer answers exactly what json_format answers, for every response
type of every service, over randomly filled messages (seeded, so a failure repeats)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_gateway.transcoding.json_out import generic, to_dict, writer

SERVICES = [
    service
    for module in (users_pb2, auth_pb2, audit_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
RESPONSES = sorted(
    {m.output_type.full_name: m.output_type for s in SERVICES for m in s.methods}.items()
)
TEXT = ["", "a", "Zoë", "名前", "line\nbreak", 'quote"', "😀", "x" * 300]


def fill(message: Any, rng: random.Random, depth: int = 0) -> None:
    """Sets a random subset of ``message``'s fields to random values of their types."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([0, 1, 1_764_115_200, 253_402_300_799, rng.randrange(2**34)])
        message.nanos = rng.choice([0, 1_000_000, 123_000, 7, rng.randrange(10**9)])
        return
    if name == "google.protobuf.Struct":
        message.update({"n": rng.random(), "s": rng.choice(TEXT), "b": True, "l": [1, "x"]})
        return
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.25:
            continue  # left unset: defaults and absent fields matter too
        for _ in range(rng.randrange(0, 4) if field.is_repeated else 1):
            _set(message, field, rng, depth)


def _set(message: Any, field: Any, rng: random.Random, depth: int) -> None:
    target = getattr(message, field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if depth > 3:
            return
        sub = target.add() if field.is_repeated else target
        sub.SetInParent()
        fill(sub, rng, depth + 1)
        return
    value = _scalar(field, rng)
    if field.is_repeated:
        target.append(value)
    else:
        setattr(message, field.name, value)


def _scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(TEXT)
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return rng.choice([v.number for v in field.enum_type.values])
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)])
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rng.choice([0, 2**64 - 1, rng.randrange(2**40)])
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rng.choice([0, 2**32 - 1, rng.randrange(2**20)])
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return rng.choice([0, -1, 2**31 - 1, -(2**31), rng.randrange(-1000, 1000)])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, 1.5, -2.25])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randrange(8))
    raise AssertionError(f"no random value for {field.full_name}")


def _messages(descriptor: Descriptor, count: int) -> Iterator[Message]:
    cls = type(_instance(descriptor))
    rng = random.Random(descriptor.full_name)
    yield cls()  # every field at its default
    for _ in range(count):
        message = cls()
        fill(message, rng)
        yield message


def _instance(descriptor: Descriptor) -> Message:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)()


@pytest.mark.parametrize(("name", "descriptor"), RESPONSES, ids=[n for n, _ in RESPONSES])
def test_the_writer_answers_what_json_format_answers(name: str, descriptor: Descriptor) -> None:
    for message in _messages(descriptor, 200):
        assert to_dict(message) == generic(message), message


def test_the_hot_responses_are_compiled() -> None:
    for message in (users_pb2.GetUserResponse, users_pb2.ListUsersResponse, users_pb2.User):
        assert writer(message.DESCRIPTOR) is not generic
    # Struct payloads (audit events) stay with json_format, which knows their JSON form.
    assert writer(audit_pb2.AuditEvent.DESCRIPTOR) is generic


def test_keys_in_field_order_and_defaults_printed() -> None:
    user = users_pb2.User(id="u", email="e", etag="t")
    user.create_time.FromSeconds(0)
    out = to_dict(user)
    assert list(out) == ["id", "email", "display_name", "create_time", "etag"]  # field order
    assert out["create_time"] == "1970-01-01T00:00:00Z"
    assert out["display_name"] == ""  # no presence: printed at its default
