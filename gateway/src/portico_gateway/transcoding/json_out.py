"""Response messages → JSON-ready dicts, with a writer compiled once per message type.

The gateway answers with protobuf's canonical JSON mapping as
``json_format.MessageToDict(message, preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)`` produces it. That function is generic: for every
field of every message it looks at the field's type again, in Python. On the hot routes the
types never change, so :func:`to_dict` builds, once per message type, a list of
(name, getter) pairs that encodes exactly the cases Portico's responses use:

* strings, booleans and 32-bit integers as they are; 64-bit integers as decimal strings;
* open enums by value name (the number when the value is unknown, as json_format does);
* ``google.protobuf.Timestamp`` as RFC 3339 (``Timestamp.ToJsonString``, json_format's own);
* nested messages with their own compiled writer; repeated fields as lists;
* a field with presence (a message, an ``optional`` or ``oneof`` member) only when it is set;
  one without presence always, even when it holds its default.

A message type with any other field (floats, bytes, maps, ``Struct``, ``Any``, wrappers,
durations, field masks …) is written by ``json_format`` itself, also where it is nested in a
compiled one (json_format writes a nested message as it writes it alone), so the output is
always json_format's (``tests/unit/gateway/test_json_out.py`` holds every response
type of every service to that). Keys come in field-number order. Hand-written rather than a
library: no maintained package compiles protobuf's JSON mapping for Python's upb messages;
docs/benchmarks.md ("Response JSON") has what it saves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

Writer = Callable[[Message], dict[str, Any]]

_AS_IS = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
_AS_STRING = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_TIMESTAMP = "google.protobuf.Timestamp"


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as json_format writes it with the gateway's options (module docstring)."""
    return writer(message.DESCRIPTOR)(message)


def generic(message: Message) -> dict[str, Any]:
    """json_format's own conversion, with the gateway's options."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


@functools.cache
def writer(descriptor: Descriptor) -> Writer:
    """The compiled writer of ``descriptor``'s messages, or :func:`generic` when it has a field
    this module does not compile."""
    if descriptor.full_name.startswith("google.protobuf."):
        return generic  # a well-known type at the top has a JSON form of its own
    compiled = _compile(descriptor)
    return compiled if compiled is not None else generic


def _compile(descriptor: Descriptor) -> Writer | None:
    fields: list[tuple[str, bool, Callable[[Any], Any], bool]] = []
    for field in descriptor.fields:
        convert = _converter(field)
        if convert is None:
            return None
        fields.append((field.name, field.has_presence, convert, field.is_repeated))

    def write(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, presence, convert, repeated in fields:
            if presence and not message.HasField(name):
                continue
            value = getattr(message, name)
            out[name] = [convert(v) for v in value] if repeated else convert(value)
        return out

    return write


def _identity(value: Any) -> Any:
    return value


def _converter(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    kind = field.type
    if kind in _AS_IS:
        return _identity
    if kind in _AS_STRING:
        return str
    if kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if enum is None or enum.is_closed or enum.full_name.startswith("google.protobuf."):
            return None  # closed enums refuse unknown numbers; NullValue is JSON null
        if any(value.has_options for value in enum.values):
            return None  # a value may carry its own JSON name
        names = {value.number: value.name for value in enum.values}
        return lambda number: names.get(number, number)
    if kind == FieldDescriptor.TYPE_MESSAGE:
        nested = field.message_type
        if nested is None:
            return None
        if nested.full_name == _TIMESTAMP:
            return lambda timestamp: timestamp.ToJsonString()
        if nested.full_name.startswith("google.protobuf.") or nested.GetOptions().map_entry:
            return None  # well-known types with JSON forms of their own; maps
        return writer(nested)  # compiled once per type; json_format's own for the rest
    return None  # float/double (json_format's NaN and precision rules), bytes, groups
