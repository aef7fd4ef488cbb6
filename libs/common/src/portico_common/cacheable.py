"""Reads the gateway may answer from the owner's cache: the ``portico.edge.v1.cacheable`` option.

The option (``proto/portico/edge/v1/edge.proto``) names, per read RPC, the key of the resource's
entry in the owning service's Valkey cache as a template over the request (``user:{id}``) or the
caller's token subject (``user:{auth:sub}``). The owner derives the key it writes from it
(the users service's ``cache.py``) and the gateway the key it reads, both through
:class:`ResourceKey`, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from portico.edge.v1 import edge_pb2
from portico_common.access import field_value, is_read_only

#: The template variable that stands for the access token's subject (the caller's user id).
AUTH_SUBJECT = "auth:sub"
_VARIABLE = re.compile(r"\{([^{}]*)\}")
_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class CacheableOptionError(ValueError):
    """A ``portico.edge.v1.cacheable`` option that cannot be served (refused at start-up)."""


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """The key template of a cacheable read, checked against its request message."""

    template: str
    #: The template's variables in order: request field paths and :data:`AUTH_SUBJECT`.
    variables: tuple[str, ...]

    @classmethod
    def parse(cls, template: str, request: Descriptor) -> ResourceKey:
        """``template`` checked: each variable a string field path of ``request`` or the subject."""
        if not template:
            raise CacheableOptionError(f"{request.full_name}: a cacheable read needs a key")
        rest = _VARIABLE.sub("", template)
        if "{" in rest or "}" in rest:
            raise CacheableOptionError(f"unbalanced braces in key template {template!r}")
        variables = tuple(_VARIABLE.findall(template))
        for variable in variables:
            if variable != AUTH_SUBJECT and not _is_string_field(request, variable):
                raise CacheableOptionError(
                    f"key template {template!r}: {{{variable}}} is neither {{{AUTH_SUBJECT}}}"
                    f" nor a string field of {request.full_name}"
                )
        return cls(template, variables)

    def fill(self, values: Mapping[str, str]) -> str | None:
        """The key for ``values`` (variable → value); None when one of them is empty."""
        if any(not values.get(v) for v in self.variables):
            return None
        return _VARIABLE.sub(lambda m: values[m[1]], self.template)

    def for_call(self, request: Message, subject: str | None) -> str | None:
        """The key of the resource ``request`` reads for the caller ``subject`` (None: none)."""
        values = {
            v: (subject or "") if v == AUTH_SUBJECT else str(field_value(request, v))
            for v in self.variables
        }
        return self.fill(values)


def _is_string_field(message: Descriptor, dotted: str) -> bool:
    if not _FIELD_PATH.fullmatch(dotted):
        return False
    descriptor: Descriptor | None = message
    field: FieldDescriptor | None = None
    for name in dotted.split("."):
        if descriptor is None:
            return False
        field = descriptor.fields_by_name.get(name)
        if field is None:
            return False
        descriptor = field.message_type
    return field is not None and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated


def cacheable_of(method: MethodDescriptor) -> edge_pb2.Cacheable | None:
    """The ``portico.edge.v1.cacheable`` option of ``method``, if it has one."""
    options = method.GetOptions()
    if not options.HasExtension(edge_pb2.cacheable):
        return None
    cacheable: edge_pb2.Cacheable = options.Extensions[edge_pb2.cacheable]
    return cacheable


def resource_key(method: MethodDescriptor) -> ResourceKey | None:
    """The checked key template of a cacheable read (None when ``method`` is not one).

    Raises :class:`CacheableOptionError` for an option on a method that is not a read (an HTTP
    binding that is not ``get``) or a template that does not fit its request.
    """
    cacheable = cacheable_of(method)
    if cacheable is None:
        return None
    if not is_read_only(method):
        raise CacheableOptionError(f"{method.full_name}: only reads may be cacheable")
    try:
        return ResourceKey.parse(cacheable.key, method.input_type)
    except CacheableOptionError as exc:
        raise CacheableOptionError(f"{method.full_name}: {exc}") from None
