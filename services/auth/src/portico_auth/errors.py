"""The auth service's domain errors: one tree, each class carrying the gRPC code it maps to.

::

    DomainError             INTERNAL             base class; never raised directly
    ├── AlreadyExists       ALREADY_EXISTS       the email belongs to another user
    ├── InvalidArgument     INVALID_ARGUMENT     FieldViolation items (google.rpc.BadRequest)
    ├── Unauthenticated     UNAUTHENTICATED      bad credentials, bad/expired/reused tokens
    ├── ResourceExhausted   RESOURCE_EXHAUSTED   throttled; ``retry_after_s`` (google.rpc.RetryInfo)
    ├── Aborted             ABORTED              a concurrent attempt got in the way; retry
    ├── Unavailable         UNAVAILABLE          PostgreSQL, Valkey or the users service is down
    └── DeadlineExceeded    DEADLINE_EXCEEDED    the deadline ran out during a backend call

The names follow the gRPC codes they map to, hence no ``Error`` suffix (ruff N818 is waived).
Same shape as ``portico_users.errors`` (a third copy would move this to ``portico_common``).

Every message is written for the client: never SQL, connection details, tracebacks, or
anything that tells an unknown account from a wrong password.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from grpc import StatusCode

#: ``google.rpc.ErrorInfo.domain`` of the errors this service reports.
ERROR_DOMAIN = "auth.portico.dev"

#: The one message for an unknown username and a wrong password alike.
BAD_CREDENTIALS = "invalid username or password"
#: The one message for a refresh token that is unknown, expired, spent or revoked.
BAD_REFRESH_TOKEN = "invalid refresh token"  # noqa: S105 - a message, not a secret


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: ``field`` is the dotted proto path."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error this service reports to its callers."""

    grpc_code: ClassVar[StatusCode] = StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AlreadyExists(DomainError):  # noqa: N818
    """Another user already has that email (compared case-insensitively)."""

    grpc_code = StatusCode.ALREADY_EXISTS

    def __init__(self, message: str = "a user with this email already exists") -> None:
        super().__init__(message)


class InvalidArgument(DomainError):  # noqa: N818
    """The request is malformed; ``violations`` says which fields and why."""

    grpc_code = StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(message or f"invalid request: {fields}")

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        """An error with a single violation."""
        return cls([FieldViolation(field, description)])


class Unauthenticated(DomainError):  # noqa: N818
    """The caller did not prove who it is: bad credentials, or a bad, spent or revoked token."""

    grpc_code = StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):  # noqa: N818
    """Too many login attempts; ``retry_after_s`` says when to try again."""

    grpc_code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many login attempts, try again later")
        self.retry_after_s = retry_after_s


class Aborted(DomainError):  # noqa: N818
    """A concurrent request changed what this one was working on; retrying is safe."""

    grpc_code = StatusCode.ABORTED


class Unavailable(DomainError):  # noqa: N818
    """A backend cannot be reached right now; the call may be retried."""

    grpc_code = StatusCode.UNAVAILABLE

    def __init__(self, message: str = "the auth service is unavailable, try again later") -> None:
        super().__init__(message)


class DeadlineExceeded(DomainError):  # noqa: N818
    """The caller's deadline (or a backend time limit) ran out during a backend call."""

    grpc_code = StatusCode.DEADLINE_EXCEEDED

    def __init__(
        self, message: str = "the deadline expired before the operation completed"
    ) -> None:
        super().__init__(message)
