"""Refresh-token shape, client addresses, and the RetryInfo of a throttled call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import SecretStr

from portico_auth.errors import ERROR_DOMAIN, ResourceExhausted
from portico_auth.servicer import bearer_token
from portico_auth.sessions import new_refresh_token, new_session_id, session_of, token_hash
from portico_auth.throttle import client_address
from portico_common.errors import ServiceError
from portico_common.errors import status_of as _status_of


def status_of(error: ServiceError) -> grpc.Status:
    return _status_of(error, domain=ERROR_DOMAIN)


def test_refresh_tokens_name_their_session_and_carry_256_random_bits() -> None:
    sid = new_session_id()
    token = new_refresh_token(sid)

    assert len(sid) == 32
    assert session_of(token) == sid
    assert len(token.partition(".")[2]) == 43  # base64url of 32 bytes
    assert token_hash(token) != token_hash(new_refresh_token(sid))
    for bad in ("", "x", f"{sid}.short", f"{'Z' * 32}.{'A' * 43}", "A" * 80):
        assert session_of(bad) is None


def test_the_client_address_is_the_gateways_last_forwarded_entry_else_the_peer() -> None:
    keys = [SecretStr("k" * 32), SecretStr("rotated-" * 4)]
    claim = ("x-forwarded-for", "6.6.6.6, 203.0.113.9")
    peer = "ipv4:10.0.0.1:5000"
    for key in keys:  # either key of a rotation
        forwarded = (claim, ("x-portico-forwarder", key.get_secret_value()))
        assert client_address(forwarded, peer, forwarder_keys=keys) == "203.0.113.9"
    # no key, a wrong one, a second one, a binary one, or no keys accepted at all: the peer
    for metadata, accepted in (
        ((claim,), keys),
        ((claim, ("x-portico-forwarder", "k" * 31)), keys),
        ((claim, ("x-portico-forwarder", "k" * 32), ("x-portico-forwarder", "x")), keys),
        ((claim, ("x-portico-forwarder-bin", b"k" * 32)), keys),
        ((claim, ("x-portico-forwarder", "k" * 32)), []),
    ):
        assert client_address(metadata, peer, forwarder_keys=accepted) == "10.0.0.1"
    assert client_address((), peer, forwarder_keys=keys) == "10.0.0.1"
    assert client_address(None, "ipv6:[::1]:5000", forwarder_keys=keys) == "::1"
    assert client_address((), "unix:/tmp/s", forwarder_keys=keys) == "unix:/tmp/s"


def test_bearer_tokens_come_from_the_authorization_metadata() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "bearer  abc "),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token(()) is None


def test_throttling_reports_retry_info() -> None:
    status = status_of(ResourceExhausted(retry_after_s=1.5))
    details = next(v for k, v in status.trailing_metadata if k == "grpc-status-details-bin")
    rich = status_pb2.Status.FromString(details)
    info = error_details_pb2.RetryInfo()

    assert rich.details[0].Unpack(info)
    assert info.retry_delay.ToMilliseconds() == 1500
    assert status.code.name == "RESOURCE_EXHAUSTED"
