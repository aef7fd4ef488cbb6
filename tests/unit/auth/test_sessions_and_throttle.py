"""Refresh-token shape, client addresses, and the RetryInfo of a throttled call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

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


def test_the_client_address_is_the_last_forwarded_entry_else_the_peer() -> None:
    forwarded = (("x-forwarded-for", "6.6.6.6, 203.0.113.9"),)
    assert client_address(forwarded, "ipv4:10.0.0.1:5000") == "203.0.113.9"
    assert client_address((), "ipv4:10.0.0.1:5000") == "10.0.0.1"
    assert client_address(None, "ipv6:[::1]:5000") == "::1"
    assert client_address((), "unix:/tmp/s") == "unix:/tmp/s"


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
