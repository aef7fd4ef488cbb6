"""Proto comments, for OpenAPI descriptions.

Generated ``_pb2`` modules carry no comments, so ``proto/generate.py`` also writes
``portico/source_info.binpb``: a ``FileDescriptorSet`` of our own files with source info. This
module indexes its leading comments by full name (``portico.users.v1.User``,
``portico.users.v1.User.email``, ``portico.users.v1.UserService.GetUser``).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence

from google.protobuf import descriptor_pb2

# Field numbers in descriptor.proto that make up a SourceCodeInfo.Location path.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD = 2
_ENUM_VALUE = 2


def _clean(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines()]
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(" ".join(p.split("\n")) for p in paragraphs).strip()


def _names(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Location path → full name, for every message, field, enum, service and method."""
    names: dict[tuple[int, ...], str] = {}
    package = file.package

    def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}.{msg.name}"
        names[path] = name
        for i, fld in enumerate(msg.field):
            names[(*path, _MESSAGE_FIELD, i)] = f"{name}.{fld.name}"
        for i, nested in enumerate(msg.nested_type):
            message(nested, (*path, _MESSAGE_NESTED, i), name)
        for i, enum in enumerate(msg.enum_type):
            enum_type(enum, (*path, _MESSAGE_ENUM, i), name)

    def enum_type(
        enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str
    ) -> None:
        names[path] = f"{scope}.{enum.name}"
        for i, value in enumerate(enum.value):
            names[(*path, _ENUM_VALUE, i)] = f"{scope}.{value.name}"

    for i, msg in enumerate(file.message_type):
        message(msg, (_FILE_MESSAGE, i), package)
    for i, enum in enumerate(file.enum_type):
        enum_type(enum, (_FILE_ENUM, i), package)
    for i, service in enumerate(file.service):
        names[(_FILE_SERVICE, i)] = f"{package}.{service.name}"
        for j, method in enumerate(service.method):
            names[(_FILE_SERVICE, i, _SERVICE_METHOD, j)] = (
                f"{package}.{service.name}.{method.name}"
            )
    return names


def index(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Full name → cleaned leading comment, for every commented element of ``files``."""
    comments: dict[str, str] = {}
    for file in files:
        names = _names(file)
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name and location.leading_comments.strip():
                comments[name] = _clean(location.leading_comments)
    return comments


@functools.cache
def proto_comments() -> dict[str, str]:
    """The comments of every Portico proto (from the generated ``source_info.binpb``)."""
    data = importlib.resources.files("portico").joinpath("source_info.binpb").read_bytes()
    return index(descriptor_pb2.FileDescriptorSet.FromString(data).file)
