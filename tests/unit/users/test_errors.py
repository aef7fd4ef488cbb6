"""Error mapping: each domain error becomes one status, with the rich details clients rely on."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from portico_common import errors
from portico_users.errors import (
    ERROR_DOMAIN,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    EtagMismatch,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)


def status_of(error: DomainError) -> grpc.Status:
    """The status the users service's error interceptor gives ``error``."""
    return errors.status_of(error, domain=ERROR_DOMAIN)


def rich(status: grpc.Status) -> status_pb2.Status:
    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("user x not found"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (InvalidArgument.for_field("email", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (EtagMismatch(), grpc.StatusCode.FAILED_PRECONDITION),
        (Unavailable(), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (DomainError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_maps_to_its_code(error: DomainError, code: grpc.StatusCode) -> None:
    status = status_of(error)

    assert status.code == code
    assert status.details == error.message
    assert rich(status).code == code.value[0]


def test_invalid_argument_carries_bad_request_field_violations() -> None:
    error = InvalidArgument(
        [FieldViolation("email", "must be a valid email address"), FieldViolation("user", "x")]
    )

    (detail,) = rich(status_of(error)).details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "must be a valid email address"),
        ("user", "x"),
    ]
    assert error.message == "invalid request: email, user"


def test_etag_mismatch_carries_error_info_for_the_gateway() -> None:
    (detail,) = rich(status_of(EtagMismatch())).details
    info = error_details_pb2.ErrorInfo()

    assert detail.Unpack(info)
    assert (info.reason, info.domain) == ("ETAG_MISMATCH", "users.portico.dev")


def test_unavailable_says_nothing_about_the_database_setup() -> None:
    assert status_of(Unavailable()).details == "the user store is unavailable, try again later"
