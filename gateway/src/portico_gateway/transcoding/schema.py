"""JSON Schema (OpenAPI 3.1) for protobuf messages, following the proto3 JSON mapping.

Messages become components named by their full name (``portico.users.v1.User``) with the proto
comments as descriptions. Field rules from protovalidate that JSON Schema can say (lengths,
ranges, email, uuid) are carried over, so the OpenAPI document tells clients what the service
will accept. Unknown fields are refused by the gateway, hence ``additionalProperties: false``.
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
    elif rules.HasField("int32"):
        i = rules.int32
        if i.HasField("gte"):
            out["minimum"] = i.gte
        if i.HasField("lte"):
            out["maximum"] = i.lte
    return out


def field_schema(field: FieldDescriptor, components: dict[str, JsonSchema]) -> JsonSchema:
    """The JSON Schema of one field's value (adds referenced messages to ``components``)."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field_schema(field.message_type.fields_by_name["value"], components)
        return {"type": "object", "additionalProperties": value}
    single = _single(field, components)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, components: dict[str, JsonSchema]) -> JsonSchema:
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        add_message(field.message_type, components)
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
) -> str:
    """Add ``descriptor`` (and what it references) to ``components``; return its name."""
    name = name or descriptor.full_name
    if name in components:
        return name
    components[name] = {}  # placeholder: recursive messages refer to themselves
    notes = comments if comments is not None else _comments()
    properties: dict[str, JsonSchema] = {}
    for field in descriptor.fields:
        if field.name in exclude:
            continue
        schema = field_schema(field, components)
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
    required = [f.name for f in descriptor.fields if f.name in properties and is_required(f)]
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
