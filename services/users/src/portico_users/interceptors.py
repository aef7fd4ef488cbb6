"""The users service's side of the shared interceptors: how its errors become gRPC statuses.

The interceptors themselves (request id, error mapping, validation) live in
:mod:`portico_common.interceptors`; this module gives them the users service's error tree::

    grpc.aio.server(interceptors=[
        RequestIdInterceptor(), ErrorInterceptor(), AccessInterceptor(…), ValidationInterceptor(v)
    ])

``status_of`` adds rich details in ``grpc-status-details-bin``: ``google.rpc.BadRequest`` for
INVALID_ARGUMENT, ``ErrorInfo`` for a FAILED_PRECONDITION with a reason (``ETAG_MISMATCH``, which
the gateway answers with 412).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import protovalidate
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from portico_common import interceptors as common
from portico_common.interceptors import RequestIdInterceptor, field_path
from portico_users.errors import (
    ERROR_DOMAIN,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)

__all__ = [
    "ErrorInterceptor",
    "RequestIdInterceptor",
    "ValidationInterceptor",
    "field_path",
    "status_of",
]


def status_of(error: DomainError) -> grpc.Status:
    """The gRPC status (code, message, rich details) that reports ``error`` to the client."""
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    if isinstance(error, FailedPrecondition) and error.reason:
        info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
        status.details.add().Pack(info)
    return rpc_status.to_status(status)


def _invalid(violations: Sequence[tuple[str, str]]) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, message) for field, message in violations)


class ErrorInterceptor(common.ErrorInterceptor):
    """Maps the users service's ``DomainError`` tree with :func:`status_of`."""

    def __init__(self) -> None:
        super().__init__(DomainError, status_of)


class ValidationInterceptor(common.ValidationInterceptor):
    """protovalidate violations become ``InvalidArgument`` (one violation per broken rule)."""

    def __init__(self, validator: protovalidate.Validator) -> None:
        super().__init__(validator, _invalid)
