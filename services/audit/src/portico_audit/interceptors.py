"""The audit service's side of the shared interceptors: how its errors become gRPC statuses."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import protovalidate
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from portico_audit.errors import DomainError, FieldViolation, InvalidArgument
from portico_common import interceptors as common
from portico_common.interceptors import RequestIdInterceptor

__all__ = ["ErrorInterceptor", "RequestIdInterceptor", "ValidationInterceptor", "status_of"]


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
    return rpc_status.to_status(status)


def _invalid(violations: Sequence[tuple[str, str]]) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, message) for field, message in violations)


class ErrorInterceptor(common.ErrorInterceptor):
    """Maps the audit service's ``DomainError`` tree with :func:`status_of`."""

    def __init__(self) -> None:
        super().__init__(DomainError, status_of)


class ValidationInterceptor(common.ValidationInterceptor):
    """protovalidate violations become ``InvalidArgument`` (one violation per broken rule)."""

    def __init__(self, validator: protovalidate.Validator) -> None:
        super().__init__(validator, _invalid)
