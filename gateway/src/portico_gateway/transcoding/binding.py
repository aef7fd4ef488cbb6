"""One HTTP binding of one RPC (a ``google.api.http`` rule), read by the routes and the OpenAPI
document alike."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message

from portico.rest.v1 import rest_pb2
from portico_common.cacheable import ResourceKey
from portico_gateway.transcoding.oauth2 import OAUTH2_FORM_PATHS
from portico_gateway.transcoding.request import find_field
from portico_gateway.transcoding.template import PathTemplate, UnsupportedTemplate


@dataclass(frozen=True, slots=True)
class Binding:
    """One HTTP rule of one RPC."""

    upstream: str
    method: MethodDescriptor
    verb: str
    template: PathTemplate
    body: str
    response_body: str
    request_class: type[Message]
    response_class: type[Message]
    index: int = 0  # 0 for the rule itself, 1… for its additional_bindings
    #: The answer carries a credential (a ``debug_redact`` field): never stored for replays.
    credentials: bool = False
    #: The read's ``portico.edge.v1.cacheable`` key: the gateway may answer it from the owner's
    #: cache (after the access check), and answers it with cache validators (``ETag``, 304).
    resource_key: ResourceKey | None = None

    @property
    def rpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def body_descriptor(self) -> Descriptor | None:
        if self.body == "*":
            return self.method.input_type
        field = find_field(self.method.input_type, self.body) if self.body else None
        return field.message_type if field is not None else None

    @property
    def result_descriptor(self) -> Descriptor:
        if not self.response_body:
            return self.method.output_type
        field = find_field(self.method.output_type, self.response_body)
        if field is None or field.message_type is None:
            raise UnsupportedTemplate(f"{self.rpc_path}: response_body must name a message field")
        return field.message_type

    @property
    def derives_mask(self) -> bool:
        mask = self.method.input_type.fields_by_name.get("update_mask")
        return (
            self.verb == "patch"
            and self.body not in ("", "*")
            and mask is not None
            and mask.message_type is not None
            and mask.message_type.full_name == "google.protobuf.FieldMask"
        )

    @property
    def takes_form(self) -> bool:
        """Whether the body may be a form: only the OAuth2 token and refresh requests.

        RFC 6749 defines them as ``application/x-www-form-urlencoded`` POSTs (sections 4.3.2
        and 6), which is what OAuth2 clients and Swagger UI's "Authorize" send; the same fields
        as JSON are accepted there too. Every other body is JSON only, as the OpenAPI document
        says (generators stumble over one schema offered in two encodings).
        """
        return (
            self.verb == "post"
            and self.body == "*"
            and self.template.route_path in OAUTH2_FORM_PATHS
        )

    @property
    def takes_etag(self) -> bool:
        return "etag" in self.method.input_type.fields_by_name

    @property
    def created_location(self) -> str:
        """The ``portico.rest.v1.created_location`` template of the RPC ('' without one)."""
        return str(self.method.GetOptions().Extensions[rest_pb2.created_location])

    @property
    def success_status(self) -> int:
        if not self.result_descriptor.fields:
            return 204
        creates = self.method.name.startswith("Create") or bool(self.created_location)
        return 201 if self.verb == "post" and creates else 200


def redacts(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message of ``descriptor`` can hold a ``debug_redact`` field (a credential)."""
    if descriptor.full_name in seen:
        return False
    inner = seen | {descriptor.full_name}
    return any(
        field.GetOptions().debug_redact
        or (field.message_type is not None and redacts(field.message_type, inner))
        for field in descriptor.fields
    )
