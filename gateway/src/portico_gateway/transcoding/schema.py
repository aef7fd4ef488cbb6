"""JSON Schema (OpenAPI 3.1) for protobuf messages, following the proto3 JSON mapping.

Messages become components named by their full name (``portico.users.v1.User``) with the proto
comments as descriptions. Field rules from protovalidate that JSON Schema can say (lengths,
ranges, email, uuid) are carried over, so the OpenAPI document tells clients what the service
will accept. Unknown fields are refused by the gateway, hence ``additionalProperties: false``.

``required`` lists, in a request, the fields protovalidate refuses to miss; in a response, also
every field without presence, which the gateway always writes (``"next_page_token": ""``), so
generated clients type them as plain values rather than maybe-absent ones. A message that is
part of a request too keeps the request's ``required`` in both places (one schema each).
"""

from __future__ import annotations

import re
from typing import Any

from buf.validate import validate_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

JsonSchema = dict[str, Any]

_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_WELL_KNOWN: dict[str, JsonSchema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated paths."},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {"type": "object"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int32", "minimum": 0},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.DoubleValue": {"type": "number"},
}


def component_ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(enum: EnumDescriptor) -> JsonSchema:
    return {"type": "string", "enum": [v.name for v in enum.values]}


_MATCHES = re.compile(r"""^this\.matches\('((?:[^'\\]|\\.)*)'\)$""")


def _field_rules(field: FieldDescriptor) -> Any:
    options = field.GetOptions()
    return (
        options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None
    )


def is_required(field: FieldDescriptor) -> bool:
    """Whether protovalidate refuses a request that leaves ``field`` out."""
    rules = _field_rules(field)
    if rules is None or (field.has_presence and field.message_type is None):
        return False  # optional scalars are checked only when set
    if rules.ignore != validate_pb2.IGNORE_UNSPECIFIED:
        return False  # the empty value is let through (or the rules are off)
    if rules.required:
        return True
    if rules.HasField("string"):
        s = rules.string
        # the empty string breaks these; an omitted field is the empty string in proto3
        return bool(s.min_len > 0 or s.email or s.uuid or (s.HasField("const") and s.const))
    return False


def _rules(field: FieldDescriptor) -> JsonSchema:
    """The protovalidate rules of ``field`` that JSON Schema can express."""
    rules = _field_rules(field)
    if rules is None:
        return {}
    out: JsonSchema = {}
    for rule in rules.cel:  # `this.matches('re')` is a JSON Schema pattern (RE2 ⊂ ECMA here)
        match = _MATCHES.match(rule.expression)
        if match:
            out["pattern"] = match.group(1).encode().decode("unicode_escape")
    if rules.HasField("string"):
        s = rules.string
        if s.HasField("const"):
            out["const"] = s.const
        if s.HasField("min_len"):
            out["minLength"] = s.min_len
        if s.HasField("max_len"):
            out["maxLength"] = s.max_len
        if s.HasField("email") and s.email:
            out["format"] = "email"
        if s.HasField("uuid") and s.uuid:
            out["format"] = "uuid"
        if rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE:
            out = _or_empty(out)
    elif rules.HasField("int32"):
        i = rules.int32
        if i.HasField("gte"):
            out["minimum"] = i.gte
        if i.HasField("lte"):
            out["maximum"] = i.lte
    return out


_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _or_empty(rules: JsonSchema) -> JsonSchema:
    """``rules`` widened to what a field with ``IGNORE_IF_ZERO_VALUE`` lets through: the empty
    string and ``null``, both the field left out in proto3's JSON. The document then accepts what
    the service accepts; it says so without ``anyOf``, which client generators handle badly.
    """
    nullable: JsonSchema = {"type": ["string", "null"]}
    if "const" in rules:
        return nullable | {"pattern": f"^(|{re.escape(str(rules['const']))})$"}
    if rules.get("format") == "uuid":
        return nullable | {"pattern": f"^(|{_UUID})$"}
    rules = dict(rules)
    rules.pop("minLength", None)
    rules.pop("format", None)
    return nullable | rules


def messages_in(descriptor: Descriptor) -> set[str]:
    """The full names of ``descriptor`` and of every message its fields reach."""
    found: set[str] = set()
    pending = [descriptor]
    while pending:
        message = pending.pop()
        if message.full_name in found:
            continue
        found.add(message.full_name)
        pending.extend(f.message_type for f in message.fields if f.message_type is not None)
    return found


def field_schema(
    field: FieldDescriptor,
    components: dict[str, JsonSchema],
    *,
    output: bool = False,
    inputs: frozenset[str] = frozenset(),
) -> JsonSchema:
    """The JSON Schema of one field's value (adds referenced messages to ``components``).

    ``output``: the field is in a response; messages it reaches that are not in ``inputs`` (the
    messages of requests) mark their fields without presence ``required``.
    """
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        entry_value = field.message_type.fields_by_name["value"]
        value = field_schema(entry_value, components, output=output, inputs=inputs)
        return {"type": "object", "additionalProperties": value}
    single = _single(field, components, output=output, inputs=inputs)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(
    field: FieldDescriptor,
    components: dict[str, JsonSchema],
    *,
    output: bool,
    inputs: frozenset[str],
) -> JsonSchema:
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        add_message(field.message_type, components, output=output, inputs=inputs)
        return component_ref(name)
    if field.enum_type is not None:
        return _enum(field.enum_type)
    kind = field.type
    if kind in _INT32:
        return {"type": "integer", "format": "int32"} | _rules(field)
    if kind in _UINT32:
        return {"type": "integer", "format": "int32", "minimum": 0} | _rules(field)
    if kind in _INT64:
        return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"} | _rules(field)


def add_message(
    descriptor: Descriptor,
    components: dict[str, JsonSchema],
    *,
    comments: dict[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
    name: str | None = None,
    min_properties: int = 0,
    output: bool = False,
    inputs: frozenset[str] = frozenset(),
) -> str:
    """Add ``descriptor`` (and what it references) to ``components``; return its name.

    ``output``: it is (part of) a response, so the fields the gateway always writes are
    required, unless the message is in ``inputs`` (part of a request too).
    """
    name = name or descriptor.full_name
    if name in components:
        return name
    components[name] = {}  # placeholder: recursive messages refer to themselves
    notes = comments if comments is not None else _comments()
    properties: dict[str, JsonSchema] = {}
    for field in descriptor.fields:
        if field.name in exclude:
            continue
        schema = field_schema(field, components, output=output, inputs=inputs)
        text = notes.get(f"{descriptor.full_name}.{field.name}")
        if text:
            schema = (
                {"allOf": [schema], "description": text}
                if "$ref" in schema
                else schema | {"description": text}
            )
            if "Output only" in text:
                schema["readOnly"] = True
        properties[field.name] = schema
    component: JsonSchema = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    always_written = output and descriptor.full_name not in inputs
    required = [
        f.name
        for f in descriptor.fields
        if f.name in properties and (is_required(f) or (always_written and not f.has_presence))
    ]
    if required:
        component["required"] = required
    if min_properties:
        component["minProperties"] = min_properties
    if text := notes.get(descriptor.full_name):
        component["description"] = text
    components[name] = component
    return name


def _comments() -> dict[str, str]:
    from portico_gateway.transcoding.comments import proto_comments

    return proto_comments()
