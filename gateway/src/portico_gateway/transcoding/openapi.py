"""The OpenAPI operation of a binding (parameters, body, responses) from descriptors, comments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portico_common.access import Rule, rule_of
from portico_gateway.transcoding.comments import proto_comments
from portico_gateway.transcoding.request import FORM, is_plain_message, resolve_path
from portico_gateway.transcoding.schema import add_message, component_ref, field_schema

if TYPE_CHECKING:
    from portico_gateway.transcoding.binding import Binding

PROBLEM = "Problem"
SECURITY_SCHEME = "OAuth2"
#: RFC 6749 §4.3 at the auth service's token route; Swagger UI's "Authorize" uses it.
OAUTH2_PASSWORD: dict[str, Any] = {
    "type": "oauth2",
    "description": (
        "Access tokens (JWT, 15 minutes) from the OAuth2 password grant: POST the form"
        " `grant_type=password&username=<email>&password=<password>` to `/v1/auth/token`, then"
        " send `Authorization: Bearer <access_token>`."
    ),
    "flows": {
        "password": {"tokenUrl": "/v1/auth/token", "refreshUrl": "/v1/auth/refresh", "scopes": {}}
    },
}
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


def operation(binding: Binding, components: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI operation fields for ``binding`` (schemas are added to ``components``)."""
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
    if binding.derives_mask:
        doc += (
            "\n\nThe fields present in the body form the update mask; an explicit"
            " `?update_mask=a,b` (field paths) overrides it."
        )
    rule = rule_of(method)
    result: dict[str, Any] = {
        "summary": _first_sentence(doc),
        "description": doc + "\n\n" + _access_note(rule),
        "parameters": parameters,
    }
    if not rule.public:
        result["security"] = [{SECURITY_SCHEME: []}]
    # 401/403/429 can come from any service (authentication, authorization, throttling).
    errors = [400, 401, 403, 404, 429, 500, 503, 504]
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
            content = {"application/json": {"schema": component_ref(name)}}
            if binding.body == "*":  # a form works too (OAuth2 token requests are forms)
                content[FORM] = {"schema": component_ref(name)}
            result["requestBody"] = {"required": True, "content": content}
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
        name = add_message(binding.result_descriptor, components)
        success["content"] = {"application/json": {"schema": component_ref(name)}}
        if "etag" in binding.result_descriptor.fields_by_name:
            success["headers"]["ETag"] = {
                "description": "The resource's version, for If-Match.",
                "schema": {"type": "string"},
            }
    if status == 201:
        success["headers"]["Location"] = {
            "description": "Path of the created resource.",
            "schema": {"type": "string"},
        }
    responses: dict[str, Any] = {str(status): success}
    for code in sorted(set(errors)):
        responses[str(code)] = _problem(_ERRORS[code])
    result["responses"] = responses
    return result
