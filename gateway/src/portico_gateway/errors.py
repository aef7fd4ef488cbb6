"""Every error leaves the gateway as ``application/problem+json`` (RFC 9457), mapped here once.

* :class:`grpc.aio.AioRpcError` from an upstream: grpc-gateway's code → HTTP table
  (``runtime/errors.go``), field errors from the ``google.rpc.BadRequest`` detail, 412 for a
  FAILED_PRECONDITION whose ``google.rpc.ErrorInfo`` reason is ``ETAG_MISMATCH``, ``Retry-After``
  with 503, and from a ``google.rpc.RetryInfo`` detail with 429 (the login throttle's). For
  INTERNAL/UNKNOWN/DATA_LOSS the upstream text is replaced by a generic one.
* :class:`RequestError`: the gateway's own checks (bad JSON, unknown field, bad header …), and
  :class:`~portico_gateway.middleware.BodyTooLarge` (a chunked body over the limit): 413.
* Starlette's HTTP errors (unknown route 404, 405), FastAPI validation errors, a client gone
  while its body was read (499, logged without a traceback: nobody hears it), and finally any
  other exception: 500 with a generic detail; the traceback goes to the log only.

Every problem carries the ``request_id`` and, inside a traced request, the ``trace_id`` (32 hex
digits, the one every log line of the request and the trace in Jaeger carry), so a client can
quote either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from portico_common.logs import trace_ids
from portico_gateway.request_context import REQUEST_ID_HEADER, request_id_of

_log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://portico.dev/problems/"
ETAG_MISMATCH = "ETAG_MISMATCH"

# grpc-gateway's runtime/errors.go HTTPStatusFromCode, but for CANCELLED (see upstream_problem).
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
# Upstream messages of 4xx answers are written for clients by our services and passed on; for
# these codes and every 5xx the client gets a generic text instead (internals stay in the log).
_OPAQUE = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
_GENERIC_DETAIL = {
    499: "the request was cancelled",
    500: "internal error; quote the request id when reporting it",
    501: "not implemented",
    503: "a service is temporarily unavailable; retry later",
    504: "a service did not answer in time",
}


class BodyTooLarge(Exception):  # noqa: N818 (an HTTP condition, named after 413)
    """The request body exceeded the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass
class RequestError(Exception):
    """A request the gateway itself refuses (before or instead of calling upstream)."""

    status: int
    detail: str
    errors: Sequence[FieldError] = field(default_factory=tuple)
    kind: str | None = None  # the problem type's last segment; derived from status if None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. WWW-Authenticate with 401


def _title(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _kind(status: int) -> str:
    return _title(status).lower().replace(" ", "-")


def problem(
    request: Request,
    *,
    status: int,
    detail: str,
    errors: Sequence[FieldError] = (),
    kind: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem response for ``request``.

    ``trace_id`` is the current span's trace (absent outside a traced request: ``/readyz``, or
    with ``OTEL_SDK_DISABLED``). It is there whether or not the trace is sampled, as in the logs.
    """
    rid = request_id_of(request.scope)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (kind or _kind(status)),
        "title": _title(status),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": rid,
    }
    trace_id, _ = trace_ids()
    if trace_id:
        body["trace_id"] = trace_id
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    all_headers = {REQUEST_ID_HEADER: rid} | (headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers, media_type=PROBLEM_JSON)


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return list(status_pb2.Status.FromString(value).details)
            except Exception:  # a malformed detail must not turn a 4xx into a 500
                _log.warning("undecodable grpc-status-details-bin from upstream")
    return []


def upstream_problem(request: Request, error: grpc.aio.AioRpcError, *, retry_after_s: int) -> Any:
    code = error.code()
    if code == grpc.StatusCode.CANCELLED:
        # The gateway never cancels a call whose answer it still sends (a client that goes away
        # takes the whole request with it), so a CANCELLED here comes from the service: a server
        # that stops cancels the calls it had received but not yet handled (grpc/grpc#41785,
        # seen in the rolling-restart drill on a busy machine). It was not the client: 503 and
        # Retry-After, not grpc-gateway's 499 "Client Closed Request".
        code = grpc.StatusCode.UNAVAILABLE
    status = GRPC_TO_HTTP.get(code, 500)
    errors: list[FieldError] = []
    kind = code.name.lower().replace("_", "-")
    retry_after: int | None = None
    for detail in _details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            errors.extend(FieldError(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if code == grpc.StatusCode.FAILED_PRECONDITION and info.reason == ETAG_MISMATCH:
                status, kind = 412, "etag-mismatch"
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            retry_after = max(1, math.ceil(delay))  # RFC 9110: whole seconds; never 0
    if code in _OPAQUE or status >= 500 or status == 499 or not error.details():
        text = _GENERIC_DETAIL.get(status, _title(status).lower())
    else:
        text = str(error.details())
    if status >= 500:
        _log.warning("upstream %s: %s", code.name, error.details())
    headers = {"Retry-After": str(retry_after_s)} if status == 503 else {}
    if retry_after is not None and status in (429, 503):  # the service knows best (RetryInfo)
        headers["Retry-After"] = str(retry_after)
    if status == 401:  # RFC 6750: a 401 names the scheme it wants
        headers["WWW-Authenticate"] = 'Bearer realm="portico", error="invalid_token"'
    return problem(request, status=status, detail=text, errors=errors, kind=kind, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods routed at this path; a literal path (``/v1/users/me``) hides variable ones."""
    matching: list[Any] = []
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            matching.append(route)
    literal = [r for r in matching if getattr(r, "path", None) == request.url.path]
    served = [r for r in (literal or matching) if getattr(r, "endpoint", None) is not None]
    methods: set[str] = set()
    for route in served:
        if getattr(route, "name", "") != "portico.method-not-allowed":  # not a 405 shim
            methods |= set(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register the handlers that turn every failure into problem+json."""

    async def on_rpc_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, grpc.aio.AioRpcError)  # noqa: S101 (registered for that type)
        return upstream_problem(request, exc, retry_after_s=retry_after_s)

    async def on_request_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, RequestError)  # noqa: S101
        return problem(
            request,
            status=exc.status,
            detail=exc.detail,
            errors=exc.errors,
            kind=exc.kind,
            headers=exc.headers,
        )

    async def on_http_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow lists every method of the path, not just one route's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route for {request.method} {request.url.path}"
        return problem(request, status=exc.status_code, detail=detail, headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        errors = [
            FieldError(".".join(str(p) for p in e.get("loc", ())[1:]) or "body", str(e["msg"]))
            for e in exc.errors()
        ]
        return problem(request, status=400, detail="invalid request", errors=errors)

    async def on_body_too_large(request: Request, exc: Exception) -> Any:
        return problem(request, status=413, detail=str(exc))  # a chunked body ran over

    async def on_client_gone(request: Request, exc: Exception) -> Any:
        # The client closed the connection, or the connection's read timeout closed it
        # (portico_gateway.edge), while the body was being read: nobody hears the answer.
        _log.info("client gone before its request body arrived: %s", request.url.path)
        return problem(request, status=499, detail=_GENERIC_DETAIL[499])

    async def on_unexpected(request: Request, exc: Exception) -> Any:
        _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(request, status=500, detail=_GENERIC_DETAIL[500])

    app.add_exception_handler(grpc.aio.AioRpcError, on_rpc_error)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(BodyTooLarge, on_body_too_large)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
