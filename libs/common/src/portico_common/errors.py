"""The errors a Portico service reports to its callers: one tree, each class carrying its gRPC code.

::

    ServiceError            INTERNAL             base class; never raised directly
    ├── NotFound            NOT_FOUND
    ├── AlreadyExists       ALREADY_EXISTS
    ├── InvalidArgument     INVALID_ARGUMENT     FieldViolation items (google.rpc.BadRequest)
    ├── FailedPrecondition  FAILED_PRECONDITION  may carry an ErrorInfo ``reason``
    ├── Unauthenticated     UNAUTHENTICATED
    ├── ResourceExhausted   RESOURCE_EXHAUSTED   carries ``retry_after_s`` (google.rpc.RetryInfo)
    ├── Aborted             ABORTED
    ├── Unavailable         UNAVAILABLE          a dependency cannot be reached; retry later
    └── DeadlineExceeded    DEADLINE_EXCEEDED    the deadline ran out during a dependency call

The names follow the gRPC codes they map to, hence no ``Error`` suffix (ruff N818 is waived).
A service's own ``errors`` module re-exports these and adds what is its own (its ErrorInfo
domain, a precondition with a reason, the wording of its outage message).

Repositories and domain code raise these; the error interceptor
(:class:`portico_common.interceptors.ErrorInterceptor`) turns them into a gRPC status with
:func:`status_of`, exactly once. Every message is written for the client: it never contains SQL,
connection details or tracebacks (those go to the server log, from the exception's
``__cause__``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: ``field`` is the dotted proto path (``user.display_name``)."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a service reports to its callers."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):  # noqa: N818
    """The resource does not exist (or no longer does)."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):  # noqa: N818
    """The resource (or its unique key) exists already."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(ServiceError):  # noqa: N818
    """The request is malformed; ``violations`` says which fields and why."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(message or f"invalid request: {fields}")

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        """An error with a single violation."""
        return cls([FieldViolation(field, description)])

    @classmethod
    def from_pairs(cls, violations: Sequence[tuple[str, str]]) -> InvalidArgument:
        """An error with one violation per ``(field path, description)`` pair."""
        return cls(FieldViolation(field, description) for field, description in violations)


class FailedPrecondition(ServiceError):  # noqa: N818
    """The system is not in the state the request requires; ``reason`` names which state."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    reason: ClassVar[str | None] = None


class Unauthenticated(ServiceError):  # noqa: N818
    """The caller's credentials are missing, wrong or no longer valid."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):  # noqa: N818
    """Too many attempts: the caller may try again after ``retry_after_s``."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, retry_after_s: float, message: str = "too many attempts") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Aborted(ServiceError):  # noqa: N818
    """A concurrent change won: the caller may retry the whole operation."""

    grpc_code = grpc.StatusCode.ABORTED


class Unavailable(ServiceError):  # noqa: N818
    """A dependency (PostgreSQL, Valkey, another service) cannot be reached; retry later."""

    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str = "the service is unavailable, try again later") -> None:
        super().__init__(message)


class DeadlineExceeded(ServiceError):  # noqa: N818
    """The caller's deadline (or the query time limit) ran out during a dependency call."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(
        self, message: str = "the deadline expired before the operation completed"
    ) -> None:
        super().__init__(message)


def status_of(error: ServiceError, *, domain: str) -> grpc.Status:
    """The gRPC status (code, message, rich details) that reports ``error`` to the client.

    Rich details in ``grpc-status-details-bin``: ``google.rpc.BadRequest`` for INVALID_ARGUMENT,
    ``ErrorInfo`` (in ``domain``) for a FAILED_PRECONDITION with a reason (``ETAG_MISMATCH``,
    which the gateway answers with 412), ``RetryInfo`` for RESOURCE_EXHAUSTED.
    """
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
        info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain)
        status.details.add().Pack(info)
    if isinstance(error, ResourceExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(max(1, math.ceil(error.retry_after_s * 1000)))
        status.details.add().Pack(retry)
    return rpc_status.to_status(status)
