"""An annotated RPC is all a REST route needs: a service built in the test gets routes and docs.

``ThingService`` (see :mod:`tests.unit.gateway.things`) has no generated code and no route
written for it; a real grpc.aio server answers it with echoes of what it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import message_factory

from tests.support.asgi import asgi_client
from tests.unit.gateway.conftest import ADMIN, gateway_app, settings_for
from tests.unit.gateway.things import PACKAGE, shop_service, thing_service

Context = grpc.aio.ServicerContext[Any, Any]


def _class(name: str) -> Any:
    return message_factory.GetMessageClass(
        thing_service().file.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    )


async def _get(request: Any, context: Context) -> Any:
    thing = _class("Thing")(
        id=request.id,
        weight=request.min_weight,
        fragile=request.fragile,
        color=request.color,
        tags=request.tags,
        etag="v1",
    )
    thing.shelf.CopyFrom(request.shelf)
    return thing


async def _create(request: Any, context: Context) -> Any:
    thing = _class("Thing")()
    thing.CopyFrom(request.thing)
    thing.id = "t-1"
    thing.shelf.id = request.shelf_id
    return thing


async def _update(request: Any, context: Context) -> Any:
    thing = _class("Thing")(id=request.thing.id, tags=request.update_mask.paths)
    return thing


def _handler(function: Callable[..., Any], request: str) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        function,
        request_deserializer=_class(request).FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    service = thing_service()
    server = grpc.aio.server()
    handlers = {
        "GetThing": _handler(_get, "GetThingRequest"),
        "CreateThing": _handler(_create, "CreateThingRequest"),
        "UpdateThing": _handler(_update, "UpdateThingRequest"),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    app = gateway_app(settings_for(target), upstreams={"things": (target, service)})
    async with asgi_client(app, headers=ADMIN) as client:
        yield client
    await server.stop(None)


async def test_every_binding_becomes_a_documented_route(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/v1/shelves/{shelf__id}/things/{id}"]) == {"get"}
    # GetThing's additional binding and UpdateThing's {thing.id}: one path, as OpenAPI needs
    assert set(paths["/v1/things/{id}"]) == {"get", "patch"}
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))  # OpenAPI: unique, additional bindings included
    assert "getThing_2" in ids  # what clients name their functions: get_thing_2
    assert set(paths["/v1/shelves/{shelf_id}/things"]) == {"post"}
    get = paths["/v1/shelves/{shelf__id}/things/{id}"]["get"]
    params = {p["name"]: (p["in"], p["schema"]) for p in get["parameters"]}
    assert params["shelf__id"] == ("path", {"type": "string"})
    assert params["tags"] == ("query", {"type": "array", "items": {"type": "string"}})
    assert params["fragile"] == ("query", {"type": "boolean"})
    assert params["color"] == (
        "query",
        {"type": "string", "enum": ["COLOR_UNSPECIFIED", "COLOR_RED"]},
    )
    assert params["min_weight"][1]["type"] == "string"  # int64 is a string in proto3 JSON
    assert "shelf" not in params  # a message field is not a query parameter
    # Thing is a request body (CreateThing) and a response: one schema, the request's required
    assert "required" not in spec["components"]["schemas"]["Thing"]
    thing = spec["components"]["schemas"]["Thing"]["properties"]
    assert thing["weight"]["format"] == "int64"
    assert thing["made_time"] == {"type": "string", "format": "date-time"}
    assert thing["counts"] == {
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int32"},
    }
    assert thing["shelf"] == {"$ref": "#/components/schemas/Shelf"}
    post = paths["/v1/shelves/{shelf_id}/things"]["post"]
    assert "201" in post["responses"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Thing"}


async def test_path_query_and_types_are_transcoded(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/v1/shelves/s1/things/t1",
        params=[
            ("tags", "a"),
            ("tags", "b"),
            ("fragile", "true"),
            ("color", "COLOR_RED"),
            ("minWeight", "12"),  # the JSON name works as well as the proto name
        ],
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"v1"'
    body = response.json()
    assert body["id"] == "t1"
    assert body["shelf"] == {"id": "s1", "name": ""}
    assert body["tags"] == ["a", "b"]
    assert (body["fragile"], body["color"], body["weight"]) == (True, "COLOR_RED", "12")
    other = await api.get("/v1/things/t2")
    assert other.json()["id"] == "t2"


@pytest.mark.parametrize(
    ("name", "value"), [("fragile", "yes"), ("color", "BLUE"), ("min_weight", "heavy")]
)
async def test_mistyped_query_parameters_are_400s(
    api: httpx.AsyncClient, name: str, value: str
) -> None:
    response = await api.get("/v1/things/t1", params={name: value})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == [name]


async def test_body_field_routes_and_201_location(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/shelves/s1/things", json={"weight": "5", "tags": ["x"]})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/shelves/s1/things/t-1"
    assert response.json()["shelf"]["id"] == "s1"
    assert response.json()["weight"] == "5"


async def test_patch_mask_comes_from_the_body_not_the_path(api: httpx.AsyncClient) -> None:
    response = await api.patch("/v1/things/t9", json={"fragile": True, "shelf": {"name": "x"}})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "t9"
    assert response.json()["tags"] == ["fragile", "shelf.name"]
    explicit = await api.patch(
        "/v1/things/t9?update_mask=made_time,shelf.name", json={"fragile": True}
    )
    assert explicit.json()["tags"] == ["made_time", "shelf.name"]


async def test_clashing_names_are_qualified_not_shadowed() -> None:
    """Two services with an RPC ``GetThing`` and a message ``Thing`` each: clients keep both.

    Elsewhere the document names operations after the RPC (``getThing``) and schemas after the
    message (``Thing``), which is what generated clients call their functions and models.
    """
    things, shop = thing_service(), shop_service()
    app = gateway_app(
        settings_for("127.0.0.1:1"),
        upstreams={"things": ("127.0.0.1:1", things), "shop": ("127.0.0.1:1", shop)},
    )
    async with asgi_client(app) as client:
        spec = (await client.get("/openapi.json")).json()
    operations = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    assert {"thingServiceGetThing", "thingServiceGetThing_2", "shopServiceGetThing"} <= set(
        operations
    )
    assert "createThing" in operations  # no clash: the RPC's own name
    assert operations["shopServiceGetThing"]["tags"] == ["shop"]
    schemas = spec["components"]["schemas"]
    assert {"TestingV1Thing", "TestingV2Thing", "Shelf"} <= set(schemas)
    assert "Thing" not in schemas
    shop_answer = operations["shopServiceGetThing"]["responses"]["200"]["content"]
    assert shop_answer["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TestingV2Thing"
    }
    assert "price" in schemas["TestingV2Thing"]["properties"]
    assert schemas["TestingV1Thing"]["properties"]["shelf"] == {
        "$ref": "#/components/schemas/Shelf"
    }
    assert [t["name"] for t in spec["tags"]] == ["things", "shop", "health"]
