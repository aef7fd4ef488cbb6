"""The OpenAPI operation of a binding (parameters, body, responses) from descriptors, comments.

The document is also what client generators read (see ``docs/clients.md``), so it is shaped for
them: one tag per upstream (``users``: a module per tag), operation ids from the RPC names
(``getUser``), schema names without the proto package (``User``; :func:`client_schema_names`)
and one encoding per request body (a form only where OAuth2 needs it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import ServiceDescriptor

from portico_common.access import Rule, rule_of
from portico_gateway.transcoding.comments import proto_comments
from portico_gateway.transcoding.request import FORM, is_plain_message, resolve_path
from portico_gateway.transcoding.schema import (
    add_message,
    component_ref,
    field_schema,
    messages_in,
)

if TYPE_CHECKING:
    from portico_gateway.transcoding.binding import Binding

PROBLEM = "Problem"
SECURITY_SCHEME = "OAuth2"
_FORM_NOTE = (
    "**Body:** an `application/x-www-form-urlencoded` form, as OAuth2 clients send it"
    " (RFC 6749); a JSON object with the same fields is accepted too."
)
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem: every error answer has this shape.",
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "Problem type."},
        "title": {"type": "string", "description": "Short, human-readable summary."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request."},
        "instance": {"type": "string", "description": "The request path."},
        "request_id": {"type": "string", "description": "Quote it when reporting a problem."},
        "trace_id": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": (
                "The request's trace id (W3C, 32 hex digits), as in the server logs and the"
                " trace; absent when the request is not traced. Quote it too."
            ),
        },
        "errors": {
            "type": "array",
            "description": "One entry per invalid field.",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "instance", "request_id"],
}
_HEADER_REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request id (yours if sane, else generated).",
        "schema": {"type": "string"},
    }
}
#: The validators' companions on every answer of a cacheable read (``portico.edge.v1``).
_CACHE_HEADERS = {
    "Cache-Control": {
        "description": "`private, no-cache`: only your own cache may keep it, and must revalidate "
        "it (`If-None-Match`) before each use.",
        "schema": {"type": "string"},
    },
    "Vary": {
        "description": "`Authorization`: the answer depends on the caller.",
        "schema": {"type": "string"},
    },
}
_ERRORS = {
    400: "Invalid request: see `errors` for the fields.",
    401: "Missing, invalid or expired credentials.",
    403: "Authenticated, but not allowed to do this.",
    429: "Too many requests; see `Retry-After`.",
    404: "Not found.",
    409: "Conflicts with the current state (e.g. a taken email).",
    412: "`If-Match` does not match the current ETag.",
    413: "Request body too large.",
    415: "Request body is neither JSON nor (where accepted) a form.",
    431: "Request headers too large, or too many of them.",
    500: "Internal error.",
    503: "A service is unavailable; see `Retry-After`.",
    504: "A service did not answer in time.",
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _HEADER_REQUEST_ID,
        "content": {"application/problem+json": {"schema": component_ref(PROBLEM)}},
    }


def _owner(field: Any) -> str:
    return str(field.containing_type.full_name) if field.containing_type is not None else ""


def _first_sentence(text: str) -> str:
    head = text.split("\n\n", 1)[0]
    return head.split(". ", 1)[0].rstrip(".")


def _access_note(rule: Rule) -> str:
    """One line on who may call, from the RPC's ``portico.access.v1.rule``."""
    if rule.public:
        return "**Access:** public, no token needed."
    if rule.authenticated:
        return "**Access:** any valid access token."
    who = [f"role `{r}`" for r in rule.roles]
    if rule.owner_field:
        who.insert(0, f"the user named by `{rule.owner_field}` (yourself)")
    return "**Access:** access token of " + " or ".join(who) + "."


def request_messages(bindings: Iterable[Binding]) -> frozenset[str]:
    """Every message that is, or is part of, a request body of ``bindings``."""
    found: set[str] = set()
    for binding in bindings:
        if binding.body and (body := binding.body_descriptor) is not None:
            found |= messages_in(body)
    return frozenset(found)


def operation(
    binding: Binding, components: dict[str, Any], *, inputs: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """OpenAPI operation fields for ``binding`` (schemas are added to ``components``).

    ``inputs``: :func:`request_messages` of all bindings, so that a message shared by a request
    and a response gets one schema wherever it is added first.
    """
    notes = proto_comments()
    components.setdefault(PROBLEM, PROBLEM_SCHEMA)
    method, request_type = binding.method, binding.method.input_type
    doc = notes.get(method.full_name, method.name)
    path_fields = {v.field_path for v in binding.template.variables}
    parameters: list[dict[str, Any]] = []
    for variable in binding.template.variables:
        leaf = resolve_path(request_type, variable.field_path)[-1]
        parameters.append(
            {
                "name": variable.param,
                "in": "path",
                "required": True,
                "description": notes.get(f"{_owner(leaf)}.{leaf.name}", ""),
                "schema": field_schema(leaf, components),
            }
        )
    if binding.body != "*":
        for field in request_type.fields:
            if field.name in path_fields or field.name == binding.body or is_plain_message(field):
                continue
            if binding.derives_mask and field.name == "update_mask":
                continue  # derived from the body; the override is described in the text
            if binding.takes_etag and field.name == "etag":
                continue  # sent as If-Match
            parameters.append(
                {
                    "name": field.name,
                    "in": "query",
                    "required": False,
                    "description": notes.get(f"{request_type.full_name}.{field.name}", ""),
                    "schema": field_schema(field, components),
                }
            )
    if binding.takes_etag:
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "Apply only if the resource still has this ETag (else 412).",
                "schema": {"type": "string"},
            }
        )
    if binding.resource_key is not None:
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "ETags you hold (or `*`): 304 without a body when one is current.",
                "schema": {"type": "string"},
            }
        )
    if binding.derives_mask:
        doc += (
            "\n\nThe fields present in the body form the update mask; an explicit"
            " `?update_mask=a,b` (field paths) overrides it."
        )
    if binding.takes_form:
        doc += "\n\n" + _FORM_NOTE
    rule = rule_of(method)
    result: dict[str, Any] = {
        "summary": _first_sentence(doc),
        "description": doc + "\n\n" + _access_note(rule),
        "parameters": parameters,
    }
    if not rule.public:
        result["security"] = [{SECURITY_SCHEME: []}]
    # 401/403/429 can come from any service (authentication, authorization, throttling); 431
    # from the gateway's edge, for any request (headers over the size or count bound).
    errors = [400, 401, 403, 404, 429, 431, 500, 503, 504]
    if binding.body:
        body_type = binding.body_descriptor
        if body_type is not None:
            exclude = frozenset(path_fields) if binding.body == "*" else frozenset()
            name = body_type.full_name if not exclude else f"{body_type.full_name}.Body"
            if binding.derives_mask:  # a PATCH body names what to change: one field at least
                name = f"{body_type.full_name}.Patch"
            add_message(
                body_type,
                components,
                exclude=exclude,
                name=name,
                min_properties=1 if binding.derives_mask else 0,
            )
            # One encoding each: a generator makes one typed argument of it (openapi-python-client
            # 0.29 emits code that fails at import for one schema under two media types).
            media_type = FORM if binding.takes_form else "application/json"
            result["requestBody"] = {
                "required": True,
                "content": {media_type: {"schema": component_ref(name)}},
            }
        errors += [413, 415]
    if binding.verb == "post":
        errors.append(409)
    if binding.verb == "patch":
        errors.append(409)
    if binding.takes_etag:
        errors.append(412)
    status = binding.success_status
    success: dict[str, Any] = {"description": "Success.", "headers": dict(_HEADER_REQUEST_ID)}
    if status != 204:
        name = add_message(binding.result_descriptor, components, output=True, inputs=inputs)
        success["content"] = {"application/json": {"schema": component_ref(name)}}
        if "etag" in binding.result_descriptor.fields_by_name:
            success["headers"]["ETag"] = {
                "description": "The resource's version (strong), for If-Match and If-None-Match.",
                "schema": {"type": "string"},
            }
    if status == 201:
        success["headers"]["Location"] = {
            "description": "Path of the created resource.",
            "schema": {"type": "string"},
        }
    responses: dict[str, Any] = {str(status): success}
    if binding.resource_key is not None:
        success["headers"].update(_CACHE_HEADERS)
        responses["304"] = {
            "description": "Not modified: `If-None-Match` names the current ETag (checked only "
            "after the access check, so a caller who may not read the resource gets 401, 403 or "
            "404 as without it).",
            "headers": {**_HEADER_REQUEST_ID, "ETag": success["headers"]["ETag"], **_CACHE_HEADERS},
        }
    for code in sorted(set(errors)):
        responses[str(code)] = _problem(_ERRORS[code])
    result["responses"] = responses
    return result


def tag(name: str, service: ServiceDescriptor) -> dict[str, Any]:
    """The OpenAPI tag of an upstream's routes: its name, described by the service's comment."""
    return {"name": name, "description": proto_comments().get(service.full_name, "")}


def _client_name(name: str) -> str:
    """``portico.users.v1.User`` → ``User``; ``….UserUpdate.Patch`` → ``UserUpdatePatch``.

    Proto packages are lower_snake_case and message names PascalCase (buf lint STANDARD), so the
    name starts at the first segment that starts with a capital letter.
    """
    parts = name.split(".")
    start = next((i for i, part in enumerate(parts) if part[:1].isupper()), len(parts) - 1)
    return "".join(parts[start:])


def _qualified_name(name: str) -> str:
    """``portico.users.v1.User`` → ``UsersV1User``: for messages whose names clash."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "portico":
        parts = parts[1:]
    words = (word for part in parts for word in part.split("_"))
    return "".join(word[:1].upper() + word[1:] for word in words)


def client_schema_names(names: Iterable[str]) -> dict[str, str]:
    """Component name (a proto full name) → the name in the document, which clients use.

    Generators name their model classes after the schema (``PorticoUsersV1User`` from
    ``portico.users.v1.User``), so the document names each message without its package, unless
    two messages share that name: then both keep their package (``UsersV1User``,
    ``AuditV1User``). Such a clash renames a published model, and the committed document's drift
    check (``make openapi-check``) puts that in front of the reviewer.
    """
    names = list(names)
    short = Counter(_client_name(n) for n in names)
    renamed = {
        n: _client_name(n) if short[_client_name(n)] == 1 else _qualified_name(n) for n in names
    }
    seen = Counter(renamed.values())
    return {n: new if seen[new] == 1 else n for n, new in renamed.items()}


_REF = "#/components/schemas/"


def _rename_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            node = node | {"$ref": _REF + names.get(ref[len(_REF) :], ref[len(_REF) :])}
        return {key: _rename_refs(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename_refs(item, names) for item in node]
    return node


def with_client_schema_names(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its schemas named by :func:`client_schema_names`, references too."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    if not schemas:
        return document
    names = client_schema_names(schemas)
    renamed: dict[str, Any] = _rename_refs(document, names)
    renamed["components"]["schemas"] = {
        names[name]: schema for name, schema in renamed["components"]["schemas"].items()
    }
    return renamed
