"""A service that exists only in tests, to show routes come from annotations alone.

``portico.testing.v1.ThingService`` is built from a ``FileDescriptorProto`` at run time (no .proto
file, no generated code) with ``google.api.http`` options covering what the users proto does not:
nested path variables (``{shelf.id}``), ``additional_bindings``, ``body: "<field>"`` with a path
variable inside the body message, two paths of one shape with different variable names
(``/v1/things/{id}``, ``/v1/things/{thing.id}``), and int64/bool/enum/repeated/map/Timestamp
fields.
"""

from __future__ import annotations

import functools

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

PACKAGE = "portico.testing.v1"
_F = descriptor_pb2.FieldDescriptorProto


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    type_name: str = "",
    repeated: bool = False,
) -> None:
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="portico/testing/v1/things.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/field_mask.proto",
            "google/protobuf/timestamp.proto",
        ],
    )
    color = file.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSPECIFIED", number=0)
    color.value.add(name="COLOR_RED", number=1)

    shelf = file.message_type.add(name="Shelf")
    _field(shelf, "id", 1, _F.TYPE_STRING)
    _field(shelf, "name", 2, _F.TYPE_STRING)

    thing = file.message_type.add(name="Thing")
    _field(thing, "id", 1, _F.TYPE_STRING)
    _field(thing, "weight", 2, _F.TYPE_INT64)
    _field(thing, "fragile", 3, _F.TYPE_BOOL)
    _field(thing, "color", 4, _F.TYPE_ENUM, type_name=f".{PACKAGE}.Color")
    _field(thing, "tags", 5, _F.TYPE_STRING, repeated=True)
    _field(thing, "shelf", 6, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Shelf")
    _field(thing, "made_time", 7, _F.TYPE_MESSAGE, type_name=f".{Timestamp.DESCRIPTOR.full_name}")
    _field(thing, "etag", 8, _F.TYPE_STRING)
    entry = thing.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_INT32)
    _field(thing, "counts", 9, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Thing.CountsEntry")
    thing.field[-1].label = _F.LABEL_REPEATED

    get = file.message_type.add(name="GetThingRequest")
    _field(get, "shelf", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Shelf")
    _field(get, "id", 2, _F.TYPE_STRING)
    _field(get, "tags", 3, _F.TYPE_STRING, repeated=True)
    _field(get, "fragile", 4, _F.TYPE_BOOL)
    _field(get, "color", 5, _F.TYPE_ENUM, type_name=f".{PACKAGE}.Color")
    _field(get, "min_weight", 6, _F.TYPE_INT64)

    create = file.message_type.add(name="CreateThingRequest")
    _field(create, "shelf_id", 1, _F.TYPE_STRING)
    _field(create, "thing", 2, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Thing")

    update = file.message_type.add(name="UpdateThingRequest")
    _field(update, "thing", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Thing")
    mask = f".{FieldMask.DESCRIPTOR.full_name}"
    _field(update, "update_mask", 2, _F.TYPE_MESSAGE, type_name=mask)

    service = file.service.add(name="ThingService")
    rules = {
        "GetThing": http_pb2.HttpRule(
            get="/v1/shelves/{shelf.id}/things/{id}",
            additional_bindings=[http_pb2.HttpRule(get="/v1/things/{id}")],
        ),
        "CreateThing": http_pb2.HttpRule(post="/v1/shelves/{shelf_id}/things", body="thing"),
        "UpdateThing": http_pb2.HttpRule(patch="/v1/things/{thing.id}", body="thing"),
    }
    for name, rule in rules.items():
        method = service.method.add(
            name=name, input_type=f".{PACKAGE}.{name}Request", output_type=f".{PACKAGE}.Thing"
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return file


@functools.cache
def thing_service() -> ServiceDescriptor:
    """``portico.testing.v1.ThingService``, added to the default pool once per process."""
    pool = descriptor_pool.Default()
    pool.Add(_file())
    return pool.FindServiceByName(f"{PACKAGE}.ThingService")


SHOP_PACKAGE = "portico.testing.v2"


@functools.cache
def shop_service() -> ServiceDescriptor:
    """``portico.testing.v2.ShopService``: its RPC ``GetThing`` and message ``Thing`` share their
    names with :func:`thing_service`'s, for the names the OpenAPI document gives clients."""
    file = descriptor_pb2.FileDescriptorProto(
        name="portico/testing/v2/shop.proto",
        package=SHOP_PACKAGE,
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    thing = file.message_type.add(name="Thing")
    _field(thing, "id", 1, _F.TYPE_STRING)
    _field(thing, "price", 2, _F.TYPE_INT32)
    get = file.message_type.add(name="GetThingRequest")
    _field(get, "id", 1, _F.TYPE_STRING)
    method = file.service.add(name="ShopService").method.add(
        name="GetThing",
        input_type=f".{SHOP_PACKAGE}.GetThingRequest",
        output_type=f".{SHOP_PACKAGE}.Thing",
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(
        http_pb2.HttpRule(get="/v2/shop/things/{id}")
    )
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindServiceByName(f"{SHOP_PACKAGE}.ShopService")
