"""HTTP request parts → one protobuf request message, with grpc-gateway's semantics.

* ``body: "*"``: the JSON body is the whole message; ``body: "<field>"``: the JSON body is that
  field; path variables then override body fields, and (unless ``body: "*"``) query parameters
  set the remaining fields (``?a=1&tags=x&tags=y&filter.kind=b``; proto or JSON field names).
* JSON follows the proto3 JSON mapping; unknown fields and wrong types are 400s naming the field.
* PATCH with a body field and an ``update_mask`` field: when the client sent no mask, the mask
  is the set of fields present in the JSON body (nested objects give dotted paths). A client's
  ``?update_mask=`` may spell the paths as proto field paths or in JSON's lowerCamelCase.
* ``If-Match`` fills a top-level string field ``etag`` (:mod:`.headers` reads it).
* ``body: "*"`` also accepts ``application/x-www-form-urlencoded`` (fields as strings), so an
  OAuth2 token endpoint can be an ordinary annotated RPC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from portico_gateway.errors import FieldError, RequestError

M = TypeVar("M", bound=Message)
_WELL_KNOWN = "google.protobuf."
_JSON_TYPES = re.compile(r"^application/(?:json|[\w.+-]+\+json)$")
_FIELD_MASK = "google.protobuf.FieldMask"
_SNAKE_PART = re.compile(r"(?<=[a-z0-9])_([a-z0-9])")


def find_field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """The field called ``name`` (proto name or JSON name) of ``descriptor``."""
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def is_plain_message(field: FieldDescriptor) -> bool:
    """A singular message field that JSON writes as an object (not a well-known scalar form)."""
    return (
        field.message_type is not None
        and not field.message_type.GetOptions().map_entry
        and not field.message_type.full_name.startswith(_WELL_KNOWN)
        and not _is_repeated(field)
    )


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def resolve_path(descriptor: Descriptor, dotted: str) -> list[FieldDescriptor]:
    """The fields along ``a.b.c``; raises 400 for unknown names or non-message hops."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in dotted.split("."):
        found = find_field(current, part) if current is not None else None
        if found is None:
            raise RequestError(400, "unknown parameter", [FieldError(dotted, "unknown field")])
        fields.append(found)
        current = found.message_type if is_plain_message(found) else None
    return fields


def _mask_json(text: str) -> str:
    """A field mask written as field paths (``display_name,user.email``) in its JSON form.

    grpc-gateway takes a query ``update_mask`` as proto field paths; proto3 JSON writes masks in
    lowerCamelCase. Both spellings are accepted: snake_case parts are camel-cased for the parser.
    """
    return ",".join(
        ".".join(_SNAKE_PART.sub(lambda m: m.group(1).upper(), part) for part in path.split("."))
        for path in text.split(",")
    )


def _scalar(field: FieldDescriptor, text: str) -> Any:
    """A path or query string as the JSON value the proto3 JSON parser expects."""
    if field.message_type is not None and field.message_type.full_name == _FIELD_MASK:
        return _mask_json(text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text in ("true", "false"):
            return text == "true"
        raise RequestError(
            400, "invalid parameter", [FieldError(field.name, "must be true or false")]
        )
    return text


def _put(data: dict[str, Any], fields: Sequence[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        data = data.setdefault(field.name, {})
    data[fields[-1].name] = value


def query_into(
    data: dict[str, Any], descriptor: Descriptor, query: Sequence[tuple[str, str]]
) -> None:
    """Add query parameters to the JSON-shaped ``data`` of a ``descriptor`` message."""
    seen: set[str] = set()
    for key, text in query:
        fields = resolve_path(descriptor, key)
        leaf = fields[-1]
        if is_plain_message(leaf):
            raise RequestError(
                400, "invalid parameter", [FieldError(key, "cannot be set from the query")]
            )
        names = ".".join(f.name for f in fields)
        if _is_repeated(leaf):
            holder: dict[str, Any] = data
            for field in fields[:-1]:
                holder = holder.setdefault(field.name, {})
            holder.setdefault(leaf.name, []).append(_scalar(leaf, text))
            continue
        if names in seen:
            raise RequestError(400, "invalid parameter", [FieldError(key, "given more than once")])
        seen.add(names)
        _put(data, fields, _scalar(leaf, text))


def expected_value(field: FieldDescriptor) -> str:
    """What a JSON value of ``field`` must be, in words, for error messages."""
    if field.is_repeated and not (field.message_type and field.message_type.GetOptions().map_entry):
        return "must be an array"
    if field.message_type is not None:
        name = field.message_type.full_name
        return _WKT_WORDS.get(name, "must be an object")
    if field.enum_type is not None:
        return "must be one of " + ", ".join(v.name for v in field.enum_type.values)
    return _TYPE_WORDS.get(field.type, "has an invalid value")


_WKT_WORDS = {
    "google.protobuf.Timestamp": "must be an RFC 3339 timestamp",
    "google.protobuf.Duration": "must be a duration such as 1.5s",
    "google.protobuf.FieldMask": "must be a comma-separated list of field paths",
}
_TYPE_WORDS = {
    FieldDescriptor.TYPE_STRING: "must be a string",
    FieldDescriptor.TYPE_BOOL: "must be true or false",
    FieldDescriptor.TYPE_BYTES: "must be base64",
    FieldDescriptor.TYPE_DOUBLE: "must be a number",
    FieldDescriptor.TYPE_FLOAT: "must be a number",
    FieldDescriptor.TYPE_INT32: "must be a 32-bit integer",
    FieldDescriptor.TYPE_SINT32: "must be a 32-bit integer",
    FieldDescriptor.TYPE_SFIXED32: "must be a 32-bit integer",
    FieldDescriptor.TYPE_UINT32: "must be a non-negative 32-bit integer",
    FieldDescriptor.TYPE_FIXED32: "must be a non-negative 32-bit integer",
    FieldDescriptor.TYPE_INT64: "must be a 64-bit integer",
    FieldDescriptor.TYPE_SINT64: "must be a 64-bit integer",
    FieldDescriptor.TYPE_SFIXED64: "must be a 64-bit integer",
    FieldDescriptor.TYPE_UINT64: "must be a non-negative 64-bit integer",
    FieldDescriptor.TYPE_FIXED64: "must be a non-negative 64-bit integer",
}


def parse_error(error: json_format.ParseError, descriptor: Descriptor) -> RequestError:
    """A 400 naming the field a proto3 JSON parse failed on, without parser internals."""
    text = str(error)
    unknown = re.search(r'has no field named "([^"]+)" at "([^"]+)"', text)
    if unknown:
        scope = unknown.group(2).split(".")[1:]
        field = ".".join([*scope, unknown.group(1)])
        return RequestError(400, "unknown field in request", [FieldError(field, "unknown field")])
    path = re.findall(r"Failed to parse (\w+) field", text)
    if path:
        dotted = ".".join(path)
        try:
            reason = expected_value(resolve_path(descriptor, dotted)[-1])
        except RequestError:
            reason = "has an invalid value"
        return RequestError(400, "invalid field value", [FieldError(dotted, reason)])
    return RequestError(400, "the request does not match the expected message")


FORM = "application/x-www-form-urlencoded"
_TOO_DEEP = "the request body is nested too deeply"


def read_body(raw: bytes, content_type: str | None, *, form_ok: bool) -> Any:
    """The document of a request body: JSON, or (where ``form_ok``) an HTML/OAuth2 form.

    A form (``application/x-www-form-urlencoded``, as RFC 6749 requires for the token endpoint)
    becomes an object of strings; a field given twice becomes a list. Other media types: 415.
    Every route with a body declares it required in the OpenAPI document, so no body at all is
    a 400, whatever the route (``{}`` is the empty message: ``POST /v1/auth/logout`` with just a
    bearer token sends ``{}``).
    """
    if not raw:
        accepted = "a JSON object or a form" if form_ok else "a JSON object ({} for no fields)"
        raise RequestError(400, f"the request body is missing; send {accepted}")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if form_ok and media_type == FORM:
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestError(400, "the request body is not UTF-8") from None
        form: dict[str, Any] = {}
        for key, value in pairs:
            held = form.get(key)
            form[key] = (
                value if held is None else [*(held if isinstance(held, list) else [held]), value]
            )
        return form
    if not _JSON_TYPES.match(media_type):
        accepted = "JSON or a form" if form_ok else "JSON (Content-Type: application/json)"
        raise RequestError(415, f"the request body must be {accepted}")
    if not raw.strip():
        raise RequestError(400, "the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError(400, "the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise RequestError(400, _TOO_DEEP) from None


def mask_paths(descriptor: Descriptor, body: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The field mask a PATCH body implies: the fields it contains, nested ones dotted."""
    paths: list[str] = []
    for key, value in body.items():
        field = find_field(descriptor, key)
        if field is None:
            continue  # the parser reports unknown fields
        nested = field.message_type
        if is_plain_message(field) and nested is not None and isinstance(value, dict) and value:
            paths.extend(mask_paths(nested, value, f"{prefix}{field.name}."))
        else:
            paths.append(prefix + field.name)
    return paths


def build_message(
    message_class: type[M],
    *,
    body_field: str,
    body: Any,
    path_params: Mapping[str, str],
    query: Sequence[tuple[str, str]],
) -> M:
    """The request message from the body, path variables (dotted paths) and query."""
    descriptor: Descriptor = message_class.DESCRIPTOR  # type: ignore[assignment]  # upb's type
    data: dict[str, Any] = {}
    if body_field == "*":
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        data = dict(body)
    elif body_field:
        target = find_field(descriptor, body_field)
        if target is not None and is_plain_message(target) and not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        data[body_field] = body
        query = [(k, v) for k, v in query if k.split(".", 1)[0] != body_field]
    if body_field != "*":
        query_into(data, descriptor, query)
    for dotted, text in path_params.items():
        fields = resolve_path(descriptor, dotted)
        _put(data, fields, _scalar(fields[-1], text))
    message = message_class()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise parse_error(exc, descriptor) from None
    except RecursionError:  # e.g. a Struct nested thousands deep
        raise RequestError(400, _TOO_DEEP) from None
    return message
