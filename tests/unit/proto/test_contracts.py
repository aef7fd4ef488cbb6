"""The proto contracts and their generator: what the gateway and the services rely on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import protovalidate
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_common.interceptors import field_path

ROOT = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_protovalidate_still_embeds_the_validate_proto_the_generator_needs() -> None:
    descriptor = _generator().validate_descriptor()
    assert descriptor.name == "buf/validate/validate.proto"
    assert "FieldRules" in {m.name for m in descriptor.message_type}


def test_every_user_service_rpc_has_an_http_rule() -> None:
    service = users_pb2.DESCRIPTOR.services_by_name["UserService"]
    rules = {m.name: m.GetOptions().Extensions[annotations_pb2.http] for m in service.methods}
    assert rules["CreateUser"].post == "/v1/users"
    assert rules["GetUser"].get == "/v1/users/{id}"
    assert rules["ListUsers"].get == "/v1/users"
    assert rules["UpdateUser"].patch == "/v1/users/{id}"
    assert rules["DeleteUser"].delete == "/v1/users/{id}"


def test_source_info_ships_the_proto_comments() -> None:
    data = (ROOT / "proto" / "gen" / "portico" / "source_info.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    users = next(f for f in files if f.name == "portico/users/v1/users.proto")
    comments = [loc.leading_comments for loc in users.source_code_info.location]
    assert any("Create a user" in c for c in comments)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (users_pb2.CreateUserRequest(email="nope", display_name="A"), "email"),
        (users_pb2.CreateUserRequest(email="a@example.com", display_name=""), "display_name"),
        (users_pb2.CreateUserRequest(email="a@example.com", display_name=" \t"), "display_name"),
        (
            users_pb2.CreateUserRequest(email="a@example.com", display_name="x" * 101),
            "display_name",
        ),
        (users_pb2.GetUserRequest(id="123"), "id"),
        (users_pb2.ListUsersRequest(page_size=0), "page_size"),
        (users_pb2.ListUsersRequest(page_size=101), "page_size"),
        (users_pb2.ListUsersRequest(page_size=-1), "page_size"),
    ],
)
def test_field_rules_reject_bad_input(message: object, field: str) -> None:
    with pytest.raises(protovalidate.ValidationError) as caught:
        protovalidate.validate(message)  # type: ignore[arg-type]
    fields = {
        v.proto.field.elements[0].field_name for v in caught.value.violations if v.proto.field
    }
    assert fields == {field}


def test_field_rules_accept_good_input_and_an_unset_page_size() -> None:
    protovalidate.validate(users_pb2.CreateUserRequest(email="a@example.com", display_name="Ada"))
    protovalidate.validate(users_pb2.ListUsersRequest())
    protovalidate.validate(users_pb2.ListUsersRequest(page_size=100))


def _string_fields(descriptor: Descriptor, prefix: str = "") -> list[str]:
    """Dotted paths of the singular string fields a client sets in ``descriptor`` (nested too)."""
    paths: list[str] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            paths.append(prefix + field.name)
        elif field.message_type is not None and field.message_type.full_name.startswith("portico."):
            paths.extend(_string_fields(field.message_type, f"{prefix}{field.name}."))
    return paths


def _request_string_fields() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for module in (auth_pb2, users_pb2, audit_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found += [
                    (method.input_type.full_name, p) for p in _string_fields(method.input_type)
                ]
    return found


@pytest.mark.parametrize(("message", "path"), _request_string_fields())
def test_every_string_field_a_client_sets_refuses_a_nul(message: str, path: str) -> None:
    """A NUL reached PostgreSQL and came back as a 500 (issue 14); each string field of each
    request refuses one itself (``portico.validate.v1.no_nul``, or a format rule such as
    ``uuid`` or ``email`` that already excludes it), so a new field without the rule fails here.
    """
    request = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(message)
    )()
    *parents, leaf = path.split(".")
    holder = request
    for name in parents:
        holder = getattr(holder, name)
    setattr(holder, leaf, "a\x00b")
    violations = protovalidate.Validator().collect_violations(request)
    assert path in {field_path(v) for v in violations}, violations
