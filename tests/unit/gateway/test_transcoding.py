"""Transcoding pieces as pure functions: templates, request building, masks, headers, schemas."""

from __future__ import annotations

from typing import Any, cast

import protovalidate
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_gateway.errors import RequestError
from portico_gateway.transcoding.comments import index, proto_comments
from portico_gateway.transcoding.headers import none_match, parse_if_match, parse_timeout
from portico_gateway.transcoding.json_out import to_dict
from portico_gateway.transcoding.openapi import request_messages
from portico_gateway.transcoding.request import build_message, mask_paths, read_body
from portico_gateway.transcoding.routes import bindings_of, settle_paths
from portico_gateway.transcoding.schema import add_message
from portico_gateway.transcoding.template import UnsupportedTemplate, parse_template
from tests.unit.gateway.things import thing_service


@pytest.mark.parametrize(
    ("template", "route", "variables"),
    [
        ("/v1/users", "/v1/users", []),
        ("/v1/users/{id}", "/v1/users/{id}", [("id", "id")]),
        ("/v1/users/{user.id}", "/v1/users/{user__id}", [("user.id", "user__id")]),
        ("/v1/files/{name=*}", "/v1/files/{name}", [("name", "name")]),
        ("/v1/files/{path=**}", "/v1/files/{path:path}", [("path", "path")]),
    ],
)
def test_templates_compile_to_starlette_paths(
    template: str, route: str, variables: list[tuple[str, str]]
) -> None:
    compiled = parse_template(template)
    assert compiled.route_path == route
    assert [(v.field_path, v.param) for v in compiled.variables] == variables


@pytest.mark.parametrize(
    "template",
    ["v1/users", "/v1/users:batchGet", "/v1/{name=users/*}", "/v1/{path=**}/tail", "/v1/a b"],
)
def test_unsupported_templates_are_refused_at_startup(template: str) -> None:
    with pytest.raises(UnsupportedTemplate):
        parse_template(template)


def test_paths_of_one_shape_share_parameter_names() -> None:
    get, put = parse_template("/v1/things/{id}"), parse_template("/v1/things/{thing.id}")
    assert get.shape == put.shape == "/v1/things/{}"
    renamed = put.renamed(("id",))
    assert renamed.route_path == "/v1/things/{id}"
    assert [(v.field_path, v.param) for v in renamed.variables] == [("thing.id", "id")]
    assert parse_template("/v1/f/{path=**}").shape == "/v1/f/{:path}"


def test_settled_bindings_share_names_and_refuse_a_taken_verb_and_path() -> None:
    settled = settle_paths(bindings_of("things", thing_service()))
    paths = {(b.verb, b.template.route_path) for b in settled}
    assert ("patch", "/v1/things/{id}") in paths  # UpdateThing's {thing.id}, renamed
    assert ("get", "/v1/things/{id}") in paths
    with pytest.raises(UnsupportedTemplate, match="already served by"):
        settle_paths([*settled, settled[0]])


def _fields(error: RequestError) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in error.errors]


def test_body_star_fills_the_whole_message() -> None:
    message = build_message(
        users_pb2.CreateUserRequest,
        body_field="*",
        body={"email": "a@example.com", "displayName": "Ada"},  # JSON names work too
        path_params={},
        query=[],
    )
    assert message == users_pb2.CreateUserRequest(email="a@example.com", display_name="Ada")


def test_body_field_path_and_query_fill_their_parts() -> None:
    message = build_message(
        users_pb2.UpdateUserRequest,
        body_field="user",
        body={"display_name": "Ada"},
        path_params={"id": "42"},
        query=[("etag", "abc"), ("user.email", "ignored@example.com")],
    )
    assert message.id == "42"
    assert message.etag == "abc"
    assert message.user.display_name == "Ada"
    assert not message.user.HasField("email")  # the body owns `user`; the query cannot set it


def test_query_sets_optional_fields_with_presence() -> None:
    message = build_message(
        users_pb2.ListUsersRequest,
        body_field="",
        body=None,
        path_params={},
        query=[("page_size", "0")],
    )
    assert message.HasField("page_size")
    assert message.page_size == 0


@pytest.mark.parametrize("mask", ["display_name,email", "displayName,email"])
def test_query_update_mask_takes_field_paths_or_json_names(mask: str) -> None:
    message = build_message(
        users_pb2.UpdateUserRequest,
        body_field="user",
        body={"email": "a@example.com"},
        path_params={"id": "1"},
        query=[("update_mask", mask)],
    )
    assert list(message.update_mask.paths) == ["display_name", "email"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([("nope", "1")], [("nope", "unknown field")]),
        ([("page_size", "1"), ("page_size", "2")], [("page_size", "given more than once")]),
        ([("page_size", "abc")], [("page_size", "must be a 32-bit integer")]),
    ],
)
def test_bad_query_parameters_are_named(query: list[tuple[str, str]], expected: Any) -> None:
    with pytest.raises(RequestError) as caught:
        build_message(
            users_pb2.ListUsersRequest, body_field="", body=None, path_params={}, query=query
        )
    assert caught.value.status == 400
    assert _fields(caught.value) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "admin": True}, "admin"),
        ({"email": 5}, "email"),
        ({"email": ["a@example.com"]}, "email"),
    ],
)
def test_unknown_or_mistyped_json_fields_are_400s_naming_the_field(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(RequestError) as caught:
        build_message(
            users_pb2.CreateUserRequest, body_field="*", body=body, path_params={}, query=[]
        )
    assert [e.field for e in caught.value.errors] == [field]


def test_nested_unknown_field_is_named_with_its_path() -> None:
    with pytest.raises(RequestError) as caught:
        build_message(
            users_pb2.UpdateUserRequest,
            body_field="user",
            body={"display_name": "A", "role": "admin"},
            path_params={"id": "1"},
            query=[],
        )
    assert [e.field for e in caught.value.errors] == ["user.role"]


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(RequestError, match="JSON object"):
        build_message(
            users_pb2.CreateUserRequest, body_field="*", body=body, path_params={}, query=[]
        )


def test_patch_mask_is_the_fields_present_in_the_body() -> None:
    descriptor = users_pb2.UserUpdate.DESCRIPTOR
    assert mask_paths(descriptor, {"display_name": "A"}) == ["display_name"]
    assert mask_paths(descriptor, {"email": "a@b.c", "displayName": "A"}) == [
        "email",
        "display_name",
    ]


@pytest.mark.parametrize(
    ("header", "etag"),
    [
        (None, None),
        ("*", None),
        ('"abc"', "abc"),
        ('W/"abc"', "abc"),
        ("abc", "abc"),
        ('"a", "b"', "a"),
    ],
)
def test_if_match_forms(header: str | None, etag: str | None) -> None:
    assert parse_if_match(header) == etag


@pytest.mark.parametrize(
    ("grpc_timeout", "request_timeout", "seconds"),
    [
        (None, None, None),
        ("100m", None, 0.1),
        ("2S", None, 2.0),
        (None, "1.5", 1.5),
        ("1S", "0.5", 0.5),
    ],
)
def test_timeout_headers(
    grpc_timeout: str | None, request_timeout: str | None, seconds: float | None
) -> None:
    assert parse_timeout(grpc_timeout, request_timeout) == seconds


@pytest.mark.parametrize(
    ("grpc_timeout", "request_timeout"),
    [
        ("100", None),
        ("1x", None),
        ("123456789S", None),
        ("0m", None),  # the gRPC spec: a positive integer
        (None, "soon"),
        (None, "-1"),
        (None, "nan"),
    ],
)
def test_malformed_timeout_headers_are_400(
    grpc_timeout: str | None, request_timeout: str | None
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_timeout(grpc_timeout, request_timeout)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b'{"a": 1}', "text/plain", 415),
        (b'{"a": 1}', None, 415),
        (b"", "application/json", 400),
        (b"{bad", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", 400),  # too deep
    ],
)
def test_body_reading_errors(raw: bytes, content_type: str | None, status: int) -> None:
    with pytest.raises(RequestError) as caught:
        read_body(raw, content_type, form_ok=False)
    assert caught.value.status == status


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert read_body(b'{"a": 1}', content_type, form_ok=False) == {"a": 1}


def test_forms_are_read_where_accepted() -> None:
    raw = b"grant_type=password&username=a%40b.io&password=p+w&scope=x&scope=y&empty="
    form = read_body(raw, "application/x-www-form-urlencoded", form_ok=True)
    assert form == {
        "grant_type": "password",
        "username": "a@b.io",
        "password": "p w",
        "scope": ["x", "y"],
        "empty": "",
    }
    with pytest.raises(RequestError) as caught:
        read_body(raw, "application/x-www-form-urlencoded", form_ok=False)
    assert caught.value.status == 415


def test_comments_are_indexed_by_full_name() -> None:
    comments = proto_comments()
    assert comments["portico.users.v1.UserService.GetUser"].startswith("Get one user by id:")
    assert "case-insensitive" in comments["portico.users.v1.User.email"]


def test_comment_index_joins_wrapped_lines_and_keeps_paragraphs() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="x.proto", package="p")
    file.message_type.add(name="M")
    location = file.source_code_info.location.add(path=[4, 0])
    location.leading_comments = " First line\n continues.\n\n Second paragraph.\n"
    assert index([file]) == {"p.M": "First line continues.\n\nSecond paragraph."}


def test_schemas_carry_types_rules_and_comments() -> None:
    components: dict[str, Any] = {}
    add_message(users_pb2.ListUsersResponse.DESCRIPTOR, components)
    user = components["portico.users.v1.User"]
    assert user["additionalProperties"] is False
    assert user["properties"]["create_time"]["format"] == "date-time"
    assert user["properties"]["id"]["readOnly"] is True
    listing = components["portico.users.v1.ListUsersResponse"]["properties"]
    assert listing["users"]["type"] == "array"
    add_message(users_pb2.CreateUserRequest.DESCRIPTOR, components)
    create = components["portico.users.v1.CreateUserRequest"]["properties"]
    assert create["email"]["format"] == "email"
    assert create["email"]["maxLength"] == 254
    assert create["display_name"]["minLength"] == 1
    add_message(users_pb2.ListUsersRequest.DESCRIPTOR, components)
    page_size = components["portico.users.v1.ListUsersRequest"]["properties"]["page_size"]
    assert (page_size["minimum"], page_size["maximum"]) == (1, 100)
    add_message(users_pb2.UpdateUserRequest.DESCRIPTOR, components)
    update = components["portico.users.v1.UpdateUserRequest"]["properties"]
    assert update["update_mask"]["type"] == "string"  # a FieldMask is "a,b" in JSON
    assert update["user"]["allOf"] == [{"$ref": "#/components/schemas/portico.users.v1.UserUpdate"}]


VALID_REQUESTS: list[Message] = [
    auth_pb2.SignUpRequest(
        email="ada@example.com",
        display_name="Ada",
        password="twelve chars!",
        idempotency_key="6f1c1d2e-8f9a-4b7c-9d0e-1f2a3b4c5d6e",
    ),
    auth_pb2.IssueTokenRequest(grant_type="password", username="ada@example.com", password="p"),
    auth_pb2.RefreshTokenRequest(refresh_token="r", grant_type="refresh_token"),
    users_pb2.CreateUserRequest(email="ada@example.com", display_name="Ada"),
]


@pytest.mark.parametrize("valid", VALID_REQUESTS, ids=lambda m: m.DESCRIPTOR.name)
def test_required_fields_are_those_protovalidate_refuses_to_miss(valid: Message) -> None:
    """A schema's ``required`` lists exactly the fields whose omission the service refuses.

    The document tells generated clients which arguments are mandatory (``grant_type`` is: its
    ``const`` refuses the empty string, which is what an omitted proto3 field is).
    """
    protovalidate.validate(valid)
    components: dict[str, Any] = {}
    name = add_message(cast(Descriptor, valid.DESCRIPTOR), components)
    refused = []
    for field in valid.DESCRIPTOR.fields:
        left_out = type(valid)()
        left_out.CopyFrom(valid)
        left_out.ClearField(field.name)
        if protovalidate.collect_violations(left_out):
            refused.append(field.name)
    assert components[name].get("required", []) == refused


def test_response_schemas_require_what_the_gateway_always_writes() -> None:
    """Every ``required`` of a response schema is a key of that message's JSON when empty.

    The gateway writes fields without presence even at their default (``to_dict``, as
    json_format with ``always_print_fields_with_no_presence``), so a generated client can type
    them as present; fields with presence (messages, ``optional``) stay optional.
    """
    services = [
        users_pb2.DESCRIPTOR.services_by_name["UserService"],
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    ]
    bindings = [b for s in services for b in bindings_of(s.name, s)]
    inputs = request_messages(bindings)
    components: dict[str, Any] = {}
    for binding in bindings:
        if binding.success_status != 204:
            add_message(binding.result_descriptor, components, output=True, inputs=inputs)
    checked = 0
    for name, schema in components.items():
        message = message_factory.GetMessageClass(
            descriptor_pool.Default().FindMessageTypeByName(name)
        )()
        written = to_dict(message)
        assert set(schema.get("required", [])) <= set(written), name
        absent = set(schema["properties"]) - set(written)
        assert not absent & set(schema.get("required", [])), name
        checked += bool(schema.get("required"))
    assert checked >= 8  # User, ListUsersResponse, IssueTokenResponse, …
    assert "create_time" not in components["portico.users.v1.User"]["required"]  # a message


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", W/"abc"', True),
        ('"x","y"', False),
        ('"ab"', False),
        ("*", True),
    ],
)
def test_if_none_match_compares_weakly_against_the_current_etag(
    header: str | None, matches: bool
) -> None:
    assert none_match(header, "abc") is matches
    assert none_match(header, "") is False  # nothing to match: never a 304
