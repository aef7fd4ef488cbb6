"""REST routes derived from ``google.api.http`` options: one generic endpoint per binding.

For every method of a registered gRPC service that carries an HTTP rule (and each of its
``additional_bindings``), :func:`add_routes` adds a FastAPI route whose endpoint transcodes the
HTTP request into the request message (:mod:`.request`), calls the upstream, and renders the
response, and whose OpenAPI operation is built from the descriptors and proto comments
(:mod:`.schema`). Adding an annotated RPC to a proto therefore adds a documented route.

Conventions on top of grpc-gateway's (AIP standard methods):

* a POST of an RPC named ``Create…`` answers **201** with ``Location: <path>/<id>`` (the
  returned resource's ``id``); so does a POST of an RPC with the option
  ``portico.rest.v1.created_location``, whose template (``/v1/users/{user_id}``) is filled from
  the response's fields;
* a response message without fields (``DeleteUserResponse``) answers **204** with no body;
* PATCH with ``body: "<field>"`` and a ``google.protobuf.FieldMask update_mask``: the gateway
  fills the mask with the fields present in the JSON body (grpc-gateway's rule; nested objects
  give dotted paths), unless the client sent ``?update_mask=`` itself (see :mod:`.request`);
* a request with a string field ``etag`` takes it from ``If-Match`` (``"x"``, ``W/"x"``, ``x``;
  ``*`` means no condition; see :mod:`.headers`); a returned resource with an ``etag`` sets the
  ``ETag`` header (quoted);
* a read with the option ``portico.edge.v1.cacheable`` is answered from the owner's Valkey
  cache when the entry is there (after the same access check; :func:`endpoint`), and either way
  carries ``Cache-Control: private, no-cache`` and ``Vary: Authorization``; an
  ``If-None-Match`` naming its ``ETag`` answers **304** without a body;
* responses use proto field names (``display_name``) and print fields that have no presence
  even when empty (``"next_page_token": ""``), so every documented property is present;
* bindings whose paths differ only in variable names (``/v1/things/{id}``,
  ``/v1/things/{thing.id}``) share the first one's names, since OpenAPI holds them to be one
  path; one verb on one path twice is refused at start-up (:func:`settle_paths`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from portico_common.access import rule_of
from portico_common.cacheable import resource_key
from portico_gateway.clients.edge_cache import EdgeCache
from portico_gateway.clients.upstream import Upstream, check_metadata
from portico_gateway.middleware.authentication import enforce, enforce_authenticated
from portico_gateway.middleware.idempotency import storable
from portico_gateway.request_context import request_id_of
from portico_gateway.transcoding import openapi
from portico_gateway.transcoding.binding import Binding, redacts
from portico_gateway.transcoding.headers import none_match, parse_if_match, parse_timeout
from portico_gateway.transcoding.json_out import to_dict
from portico_gateway.transcoding.request import build_message, mask_paths, read_body
from portico_gateway.transcoding.template import UnsupportedTemplate, parse_template

_VERBS = ("get", "put", "post", "delete", "patch")
_LOCATION_FIELD = re.compile(r"\{(\w+)\}")
#: Every answer of a cacheable read: any cache (the browser's) may keep it for this caller only
#: and must revalidate it (``If-None-Match``) before each use; the answer differs per token.
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
#: Span attribute of a cacheable read: True when the gateway answered it from the owner's cache.
EDGE_SERVED = "portico.gateway.edge_served"


def _rules(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def bindings_of(upstream: str, service: ServiceDescriptor) -> list[Binding]:
    """Every HTTP binding of ``service``; raises :class:`UnsupportedTemplate` early."""
    found: list[Binding] = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for index, rule in enumerate(_rules(options.Extensions[annotations_pb2.http])):
            verb = rule.WhichOneof("pattern")
            if verb not in _VERBS:
                raise UnsupportedTemplate(f"{method.full_name}: HTTP pattern {verb!r}")
            binding = Binding(
                upstream=upstream,
                method=method,
                verb=verb,
                template=parse_template(getattr(rule, verb)),
                body=rule.body,
                response_body=rule.response_body,
                request_class=message_factory.GetMessageClass(method.input_type),
                response_class=message_factory.GetMessageClass(method.output_type),
                index=index,
                credentials=redacts(method.output_type),
                resource_key=resource_key(method),
            )
            result = binding.result_descriptor  # validates response_body now, not per request
            for name in _LOCATION_FIELD.findall(binding.created_location):
                if name not in result.fields_by_name:
                    raise UnsupportedTemplate(f"{method.full_name}: created_location {{{name}}}")
            found.append(binding)
    return found


def settle_paths(bindings: Sequence[Binding]) -> list[Binding]:
    """``bindings`` made to share one router and one valid OpenAPI document.

    OpenAPI holds ``/v1/things/{id}`` and ``/v1/things/{thing__id}`` to be one path, so a binding
    takes the parameter names of the first binding of its shape (only the route's names change;
    each still fills its own fields). The same verb on one shape twice is refused at start-up:
    one of the two could never be reached.
    """
    names_by_shape: dict[str, tuple[str, ...]] = {}
    served_by: dict[tuple[str, str], str] = {}
    settled: list[Binding] = []
    for binding in bindings:
        shape = binding.template.shape
        if owner := served_by.get((binding.verb, shape)):
            raise UnsupportedTemplate(
                f"{binding.method.full_name}: {binding.verb.upper()} {binding.template.template}"
                f" is already served by {owner}"
            )
        served_by[binding.verb, shape] = binding.method.full_name
        params = tuple(v.param for v in binding.template.variables)
        names = names_by_shape.setdefault(shape, params)
        template = binding.template if names == params else binding.template.renamed(names)
        settled.append(replace(binding, template=template))
    return settled


def render(binding: Binding, request: Request, reply: Message) -> Response:
    """The HTTP response for an upstream ``reply``."""
    result: Message = getattr(reply, binding.response_body) if binding.response_body else reply
    return render_result(binding, request, result)


def render_result(binding: Binding, request: Request, result: Message) -> Response:
    """The HTTP response for ``result``, the message the binding answers with (the upstream
    reply's ``response_body`` field, or the resource the edge path found in the cache)."""
    status = binding.success_status
    if status == 204:
        return Response(status_code=204)
    headers: dict[str, str] = {}
    fields = result.DESCRIPTOR.fields_by_name
    resource_id = str(getattr(result, "id")) if "id" in fields else ""  # noqa: B009
    if status == 201 and (template := binding.created_location):
        headers["Location"] = _LOCATION_FIELD.sub(lambda m: str(getattr(result, m[1])), template)
    elif status == 201 and resource_id:
        headers["Location"] = f"{request.url.path.rstrip('/')}/{resource_id}"
    etag = str(getattr(result, "etag")) if "etag" in fields else ""  # noqa: B009
    if etag:
        headers["ETag"] = f'"{etag}"'
    if binding.resource_key is not None:
        headers.update(CACHE_HEADERS)
        if none_match(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    content = to_dict(result)  # json_format's output, compiled per message type
    return JSONResponse(content, status_code=status, headers=headers)


#: The header with which testers reach the canary of every service in a mesh (Argo Rollouts'
#: header route, see istio/README.md); passed on so one request stays on the canary path.
CANARY_HEADER = "x-portico-canary"
#: Every request header :func:`forwarded_metadata` passes on (a value gRPC cannot carry is a 400,
#: see :func:`~portico_gateway.clients.upstream.check_metadata`).
FORWARDED_HEADERS = ("authorization", CANARY_HEADER, "x-forwarded-for")


def forwarded_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """What the services need to know of the HTTP caller: its token, its address, its route.

    ``x-forwarded-for`` gets the peer's address appended (the auth service trusts its last entry,
    which the gateway wrote, on calls that carry the gateway's forwarder key), so it can throttle
    logins per client address.
    ``x-portico-canary`` travels on as metadata, so the mesh routes the upstream call to the
    services' canaries too.
    """
    forwarded: list[tuple[str, str]] = []
    if authorization := request.headers.get("authorization"):
        forwarded.append(("authorization", authorization))
    if canary := request.headers.get(CANARY_HEADER):
        forwarded.append((CANARY_HEADER, canary))
    if request.client is not None:
        chain = request.headers.get("x-forwarded-for")
        peer = request.client.host
        forwarded.append(("x-forwarded-for", f"{chain}, {peer}" if chain else peer))
    return tuple(forwarded)


def endpoint(binding: Binding) -> Callable[[Request], Awaitable[Response]]:
    """The FastAPI endpoint that serves ``binding``."""

    rule = rule_of(binding.method)
    key = binding.resource_key
    result_class = message_factory.GetMessageClass(binding.result_descriptor)

    async def transcode(request: Request) -> Response:
        principal = enforce_authenticated(rule, request.scope)  # 401 before the body is read
        body: Any = None
        if binding.body:
            body = read_body(
                await request.body(),
                request.headers.get("content-type"),
                form_ok=binding.takes_form,
            )
        descriptor = binding.body_descriptor
        derived: list[str] = []  # from the body as sent, before path variables are merged in
        if (
            binding.derives_mask
            and not request.query_params.get("update_mask")
            and isinstance(body, dict)
            and descriptor is not None
        ):
            derived = mask_paths(descriptor, body)
        message = build_message(
            binding.request_class,
            body_field=binding.body,
            body=body,
            path_params={
                v.field_path: request.path_params[v.param] for v in binding.template.variables
            },
            query=[
                (k, v) for k, v in request.query_params.multi_items() if k != "update_mask" or v
            ],
        )
        if derived:
            message.update_mask.paths.extend(derived)  # type: ignore[attr-defined]
        if binding.takes_etag and (tag := parse_if_match(request.headers.get("if-match"))):
            message.etag = tag  # type: ignore[attr-defined]
        enforce(rule, principal, message)  # 403 unless the RPC's rule admits the caller
        timeout = parse_timeout(
            request.headers.get("grpc-timeout"), request.headers.get("request-timeout")
        )
        forwarded = forwarded_metadata(request)
        if key is not None:
            # The edge path: only now, after the verdict, is anything fetched. A request the
            # service path would refuse (a header gRPC cannot carry) is refused here alike.
            check_metadata(forwarded)
            edge_cache: EdgeCache | None = request.state.edge_cache
            entry = key.for_call(message, principal.user_id if principal is not None else None)
            cached = None
            if edge_cache is not None and entry is not None:
                cached = await edge_cache.read(entry, result_class)
            trace.get_current_span().set_attribute(EDGE_SERVED, cached is not None)
            if cached is not None:
                return render_result(binding, request, cached)
        upstream: Upstream = request.state.upstreams[binding.upstream]
        if not binding.credentials:
            storable(request.scope)  # an Idempotency-Key replay may store this answer
        reply = await upstream.call(
            binding.rpc_path,
            message,
            binding.response_class,
            request_id=request_id_of(request.scope),
            timeout_s=timeout,
            forwarded=forwarded,
        )
        return render(binding, request, reply)

    return transcode


METHOD_NOT_ALLOWED = "portico.method-not-allowed"  # route name of the 405 shims


async def _method_not_allowed() -> Response:
    raise StarletteHTTPException(405)


def _shadowed_verbs(bindings: Sequence[Binding]) -> dict[str, set[str]]:
    """Literal route path → verbs that only a variable route would serve there."""
    served: dict[str, set[str]] = {}
    for binding in bindings:
        served.setdefault(binding.template.route_path, set()).add(binding.verb.upper())
    shadowed: dict[str, set[str]] = {}
    for path, verbs in served.items():
        if "{" in path:
            continue
        for other, other_verbs in served.items():
            if other != path and "{" in other and compile_path(other)[0].match(path):
                shadowed.setdefault(path, set()).update(other_verbs - verbs)
    return {path: verbs for path, verbs in shadowed.items() if verbs}


def _specificity(binding: Binding) -> tuple[int, ...]:
    return tuple(int(part.startswith("{")) for part in binding.template.route_path.split("/"))


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def operation_ids(bindings: Sequence[Binding]) -> list[str]:
    """The OpenAPI ``operationId`` of each binding: what generated clients name their functions.

    The RPC's name in lowerCamelCase (``getUser``, ``get_user`` in a Python client), prefixed by
    its service's name only where two services have an RPC of that name
    (``thingServiceGetThing``); an additional binding adds ``_2``, ``_3``… OpenAPI requires them
    unique: a clash left after that is refused at start-up.
    """
    services: dict[str, set[str]] = {}
    for binding in bindings:
        services.setdefault(binding.method.name, set()).add(
            binding.method.containing_service.full_name
        )
    ids: list[str] = []
    for binding in bindings:
        method = binding.method
        base = method.name
        if len(services[method.name]) > 1:
            base = method.containing_service.name + method.name
        base = _lower_camel(base)
        ids.append(base if binding.index == 0 else f"{base}_{binding.index + 1}")
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise UnsupportedTemplate(f"operation ids {clashes} are not unique")
    return ids


def add_routes(app: FastAPI, bindings: list[Binding], components: dict[str, Any]) -> None:
    """Register ``bindings`` on ``app``; their schemas go into ``components``.

    Literal segments are registered before variables in the same place, so ``/v1/users/me``
    is matched before ``/v1/users/{id}`` whatever the order of the RPCs in the proto; and a verb
    the literal path does not serve (``PATCH /v1/users/me``) is 405 there, not a call of the
    variable route with ``id = "me"``.
    """
    ordered = sorted(bindings, key=_specificity)
    for path, verbs in _shadowed_verbs(ordered).items():
        app.add_api_route(
            path,
            _method_not_allowed,
            methods=sorted(verbs),
            include_in_schema=False,
            name=METHOD_NOT_ALLOWED,
        )
    inputs = openapi.request_messages(ordered)
    for binding, operation_id in zip(ordered, operation_ids(ordered), strict=True):
        service = binding.method.containing_service
        operation = openapi.operation(binding, components, inputs=inputs)
        app.add_api_route(
            binding.template.route_path,
            endpoint(binding),
            methods=[binding.verb.upper()],
            name=f"{service.full_name}.{operation_id}",
            operation_id=operation_id,
            tags=[binding.upstream],  # one tag per upstream: `users`, a module per tag in clients
            summary=operation.pop("summary"),
            description=operation.pop("description"),
            status_code=binding.success_status,
            openapi_extra=operation,
            include_in_schema=True,
        )
