"""Checks shared by the hostile-input suite."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2

from portico_auth.config import ThrottleSettings
from tests.support.security import LEAKS, PROBLEM_FIELDS, PROBLEM_JSON

#: Login and sign-up throttles small enough to reach in a few calls (``throttle/``,
#: ``forwarding/``): three guesses per account and client, three sign-ups per client.
THROTTLE_LIMITS = ThrottleSettings(
    account_client_limit=3,
    account_limit=50,
    address_limit=50,
    signup_address_limit=3,
    window_s=60.0,
)


def refused(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of ``response``, checked to be ``status`` and to show no internals
    (field errors allowed, unlike the security suite's ``problem``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert PROBLEM_FIELDS <= set(body) <= PROBLEM_FIELDS | {"trace_id", "errors"}, body
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    for leak in LEAKS:
        assert leak not in body["detail"], body["detail"]
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    """The fields a problem's ``errors`` name."""
    return {e["field"] for e in body.get("errors", [])}


def violated_fields(error: grpc.aio.AioRpcError) -> set[str]:
    """The fields of the ``google.rpc.BadRequest`` detail of a gRPC error."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field for v in bad.field_violations}
    return set()
