"""``portico.edge.v1.cacheable``: the key templates, read by the owner and the gateway alike."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from portico.edge.v1 import edge_pb2
from portico.users.v1 import users_pb2
from portico_common.cacheable import (
    AUTH_SUBJECT,
    CacheableOptionError,
    ResourceKey,
    cacheable_of,
    resource_key,
)
from portico_users import repository
from portico_users.cache import CachedUsers
from portico_users.config import ValkeySettings

SERVICE = users_pb2.DESCRIPTOR.services_by_name["UserService"]
GET_USER = SERVICE.methods_by_name["GetUser"]
GET_CURRENT_USER = SERVICE.methods_by_name["GetCurrentUser"]
USERS_PROTO = users_pb2.DESCRIPTOR.name


def test_get_user_and_get_current_user_name_the_same_entry_for_the_same_user() -> None:
    user_id = str(uuid.uuid4())
    by_id, by_token = resource_key(GET_USER), resource_key(GET_CURRENT_USER)
    assert by_id is not None
    assert by_token is not None
    assert by_token.variables == (AUTH_SUBJECT,)
    assert by_id.for_call(users_pb2.GetUserRequest(id=user_id), subject="someone else") == (
        by_token.for_call(users_pb2.GetCurrentUserRequest(), subject=user_id)
    )


def test_the_users_cache_writes_the_key_the_gateway_reads() -> None:
    """Both sides, read as they run: the users service's key of an entry and the gateway's
    (the prefix it is configured with, then GetUser's template over the request)."""
    from portico_gateway.config import GatewaySettings

    user_id = uuid.uuid4()
    client: Any = type("NoValkey", (), {"register_script": lambda self, script: None})()
    prefix = ValkeySettings().key_prefix
    owner = CachedUsers(None, client, ttl_s=1, tombstone_ttl_s=1, key_prefix=prefix)  # type: ignore[arg-type]
    key = resource_key(GET_USER)
    assert key is not None
    gateway_prefix = GatewaySettings.model_construct().edge_cache_key_prefix
    read = gateway_prefix + str(key.for_call(users_pb2.GetUserRequest(id=str(user_id)), None))
    assert owner.key(user_id) == read == f"portico:users:v1:user:{user_id}"


def test_an_empty_variable_leaves_the_read_to_the_service() -> None:
    by_id, by_token = resource_key(GET_USER), resource_key(GET_CURRENT_USER)
    assert by_id is not None
    assert by_token is not None
    assert by_id.for_call(users_pb2.GetUserRequest(), subject="x") is None
    assert by_token.for_call(users_pb2.GetCurrentUserRequest(), subject=None) is None


def test_only_the_two_reads_are_cacheable_and_their_events_are_the_ones_the_owner_commits() -> None:
    marked = {m.name for m in SERVICE.methods if cacheable_of(m) is not None}
    assert marked == {"GetUser", "GetCurrentUser"}
    source = inspect.getsource(repository)
    for method in (GET_USER, GET_CURRENT_USER):
        cacheable = cacheable_of(method)
        assert cacheable is not None
        for event in cacheable.invalidated_by:
            assert f'new_event("{event}"' in source, event  # the users service writes it


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "needs a key"),
        ("user:{nope}", "{nope} is neither"),
        ("user:{id", "unbalanced"),
        ("user:{page_size}", "{page_size} is neither"),
        ("user:{id.x}", "{id.x} is neither"),
    ],
)
def test_a_template_that_does_not_fit_the_request_is_refused(template: str, problem: str) -> None:
    request = (
        users_pb2.GetUserRequest.DESCRIPTOR
        if "page_size" not in template
        else users_pb2.ListUsersRequest.DESCRIPTOR
    )
    with pytest.raises(CacheableOptionError, match=problem):
        ResourceKey.parse(template, request)


def test_a_cacheable_write_is_refused() -> None:
    """The option on an RPC whose binding is not a GET stops whoever reads it (the gateway at
    start-up, the users cache) rather than serving a write from a cache."""
    name = "portico/testing/v1/cacheable_write.proto"
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(name)
    except KeyError:
        source = descriptor_pb2.FileDescriptorProto(
            name=name, package="portico.testing.v1", syntax="proto3", dependency=[USERS_PROTO]
        )
        method = source.service.add(name="WriteService").method.add(
            name="UpdateUser",
            input_type=".portico.users.v1.UpdateUserRequest",
            output_type=".portico.users.v1.UpdateUserResponse",
        )
        method.options.Extensions[annotations_pb2.http].patch = "/v1/users/{user.id}"
        method.options.Extensions[edge_pb2.cacheable].key = "user:{user.id}"
        pool.Add(source)
    write = pool.FindMethodByName("portico.testing.v1.WriteService.UpdateUser")
    assert cacheable_of(write) is not None
    with pytest.raises(CacheableOptionError, match="only reads"):
        resource_key(write)
