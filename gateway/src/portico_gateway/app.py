"""The composition root: ``create_app(settings)`` builds the whole gateway.

Routes for upstream RPCs are derived from their ``google.api.http`` options
(:mod:`portico_gateway.transcoding`); the gateway's own routes are ordinary FastAPI routes.
Nothing here runs at import time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from google.protobuf.descriptor import ServiceDescriptor

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_common.metrics import record_build_info
from portico_common.tokens import TokenVerifier
from portico_gateway.config import GatewaySettings
from portico_gateway.errors import install_error_handlers
from portico_gateway.lifespan import make_lifespan
from portico_gateway.middleware.authentication import AuthenticationMiddleware
from portico_gateway.middleware.body_limit import BodyLimitMiddleware
from portico_gateway.middleware.edge_limits import EdgeLimitsMiddleware
from portico_gateway.middleware.idempotency import IdempotencyMiddleware
from portico_gateway.middleware.rate_limit import Limit, RateLimitMiddleware
from portico_gateway.middleware.request_id import RequestIdMiddleware
from portico_gateway.middleware.security_headers import SecurityHeadersMiddleware, cors_options
from portico_gateway.routers import docs, health
from portico_gateway.telemetry import AccessMiddleware, instrument, metrics_router
from portico_gateway.transcoding.oauth2 import OAUTH2_PASSWORD
from portico_gateway.transcoding.openapi import (
    SECURITY_SCHEME,
    tag,
    with_client_schema_names,
)
from portico_gateway.transcoding.routes import add_routes, bindings_of, settle_paths

DESCRIPTION = """\
Portico's REST API. Every `/v1` route is derived from a gRPC method's `google.api.http`
option, and documented from the proto comments. Errors are `application/problem+json`
(RFC 9457). Send `X-Request-ID` to correlate a call with the server logs.
"""


def upstream_services(settings: GatewaySettings) -> dict[str, tuple[str, ServiceDescriptor]]:
    """Each upstream: name → (gRPC target, the service whose HTTP rules become routes)."""
    return {
        "users": (settings.users_target, users_pb2.DESCRIPTOR.services_by_name["UserService"]),
        "auth": (settings.auth_target, auth_pb2.DESCRIPTOR.services_by_name["AuthService"]),
        "audit": (settings.audit_target, audit_pb2.DESCRIPTOR.services_by_name["AuditService"]),
    }


class PorticoAPI(FastAPI):
    """FastAPI whose OpenAPI document also carries the schemas derived from the protos."""

    proto_components: dict[str, Any]

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = get_openapi(
                title=self.title,
                version=self.version,
                description=self.description,
                routes=self.routes,
                tags=self.openapi_tags,
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(self.proto_components)
            components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = OAUTH2_PASSWORD
            self.openapi_schema = with_client_schema_names(schema)
        return self.openapi_schema


def create_app(
    settings: GatewaySettings,
    *,
    upstreams: Mapping[str, tuple[str, ServiceDescriptor]] | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    """The gateway application for ``settings``.

    ``upstreams`` (name → (gRPC target, service)) replaces :func:`upstream_services`; tests use it
    to serve a service of their own, which shows that an annotated RPC is all a route needs.
    ``verifier`` replaces the token verifier the lifespan builds (JWKS from the auth service,
    sessions in Valkey).
    """
    upstreams = upstream_services(settings) if upstreams is None else upstreams
    app = PorticoAPI(
        title="Portico API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=make_lifespan(settings, upstreams, verifier=verifier),
        docs_url=None,  # served by routers.docs: open in dev, admins only in production
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # like grpc-gateway: `/v1/users/` is an unknown route (404)
        # Traces come from OpenTelemetry's ASGI middleware (instrument() below). FastAPI's own
        # telemetry steps aside when it finds that middleware, but only after checking for it on
        # every request: off, it costs nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.proto_components = {}
    app.state.draining = False  # True from the first SIGTERM on: /readyz answers 503
    record_build_info("gateway", "portico-gateway")
    install_error_handlers(app, retry_after_s=settings.retry_after_s)
    app.include_router(
        health.make_router(
            readiness_timeout_s=settings.readiness_timeout_s, retry_after_s=settings.retry_after_s
        )
    )
    app.include_router(metrics_router())
    app.include_router(
        docs.make_router(production=settings.environment == "production", title=app.title)
    )
    bindings = [b for name, (_, svc) in upstreams.items() for b in bindings_of(name, svc)]
    add_routes(app, settle_paths(bindings), app.proto_components)
    served = {b.upstream for b in bindings}
    app.openapi_tags = [tag(name, svc) for name, (_, svc) in upstreams.items() if name in served]
    app.openapi_tags.append(health.TAG)
    # Added innermost first: each add_middleware wraps everything added before it.
    app.add_middleware(
        IdempotencyMiddleware,  # innermost: replays answers of retried POSTs
        ttl_s=settings.idempotency_ttl_s,
        lock_ttl_s=settings.idempotency_lock_ttl_s,
        wait_s=settings.idempotency_wait_s,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(
        RateLimitMiddleware,  # after authentication: limits per user too
        address=Limit(settings.rate_limit_address_per_minute, settings.rate_limit_address_burst),
        user=Limit(settings.rate_limit_user_per_minute, settings.rate_limit_user_burst),
        warning_interval_s=settings.rate_limit_warning_interval_s,
    )
    app.add_middleware(AuthenticationMiddleware)  # principal for rate limits and routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        EdgeLimitsMiddleware,  # 431 before anything reads a header; 503 over the connection limit
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts_max_age_s=settings.hsts_max_age_s)
    if (cors := cors_options(settings)) is not None:
        app.add_middleware(CORSMiddleware, **cors)  # preflights are answered before the rest
    app.add_middleware(
        AccessMiddleware, slow_s=settings.trace_slow_s
    )  # times and logs each request, with its request id
    app.add_middleware(RequestIdMiddleware)  # outermost of ours: every answer carries the id
    instrument(app)  # OpenTelemetry's middleware wraps all the rest: logs carry the trace id
    return app


def openapi_text() -> str:
    """The OpenAPI document the gateway serves, as committed in ``docs/api/openapi.json``.

    The document depends on the protos and the code, not on settings: built from the defaults,
    whatever ``GATEWAY_*`` says. Keys keep the served order (paths as registered).
    """
    app = create_app(GatewaySettings.model_construct())
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
