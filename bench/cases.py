"""What is measured: each case, and its variants run interleaved in the same cells.

Adding a variant is one ``Variant`` entry in a case, plus, if it needs processes of its own,
their start in :mod:`bench.harness` (as the ``otel_overhead`` pairs have). ``server`` names the
process that receives the load (``users`` means direct gRPC, driven by :mod:`bench.grpc_load`; the
others are HTTP, driven by wrk).

Every request carries an access token (``Authorization: Bearer``, gRPC ``authorization``
metadata) of the case's ``caller`` (:mod:`bench.tokens`): the owner reading their own account in
the cached GET, the dev admin elsewhere. ``TOKEN_CHECKS`` says how many times each server's path
verifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.tokens import Caller

Fixture = Literal["cached_id", "miss_ids", "patch_pool", "tag"]
Hook = Literal["warm_cached", "flush_cache", "refresh_etags"]
GrpcOp = Literal["get", "list", "create", "patch"]

#: The variant every ratio is taken against the others of its case.
FULL_PATH = "gateway"

#: The processes each server's requests go through (their CPU makes up the "CPU µs/req" column).
PATHS: dict[str, tuple[str, ...]] = {
    "gateway": ("gateway", "users", "valkey", "postgres"),
    "users": ("users", "valkey", "postgres"),
    "monolith": ("monolith", "valkey"),
    "monolith_verify": ("monolith_verify", "valkey"),
    "floor": ("floor",),
    # otel_overhead: a gateway + users pair each, started next to the stack (bench.harness).
    "gateway_otel_on": ("gateway_otel_on", "users_otel_on", "valkey", "postgres"),
    "gateway_otel_off": ("gateway_otel_off", "users_otel_off", "valkey", "postgres"),
    "gateway_otel_sampled": ("gateway_otel_sampled", "users_otel_sampled", "valkey", "postgres"),
    # auth_overhead: a gateway + users pair each, likewise.
    "gateway_auth_on": ("gateway_auth_on", "users_auth_on", "valkey", "postgres"),
    "gateway_auth_off": ("gateway_auth_off", "users_auth_off", "valkey", "postgres"),
    # get_cached: the edge path and the path through the users service, at production settings.
    "gateway_edge": ("gateway_edge", "users_edge", "valkey", "postgres"),
    "gateway_via_users": ("gateway_via_users", "users_via_users", "valkey", "postgres"),
}

#: The telemetry-overhead pairs: gateway server → its mode. Both run the same code, against the
#: stack's Valkey, PostgreSQL and auth service; only their telemetry environment differs
#: (:data:`OTEL_ENV`): tracing and request metrics on, or both off. Nothing scrapes the metrics
#: during the cells; the access log is written in both.
OTEL_PAIRS: dict[str, Literal["on", "off", "sampled"]] = {
    "gateway_otel_on": "on",
    "gateway_otel_off": "off",
    "gateway_otel_sampled": "sampled",
}
#: Production's head-sampling ratio (staging and prod overlays; tests/k8s pins them to it).
PRODUCTION_RATIO = "0.05"
#: ``on``: every request sampled (``always_on``), spans batched and exported over OTLP/gRPC to
#: :mod:`bench.otlp_sink` (``{sink}`` is its address), as to a collector, and request metrics
#: recorded. ``off``: the SDK off, so no span is recorded (the instrumentation's wrappers still
#: run, with no-op spans), and ``PORTICO_METRICS_ENABLED=false`` (no RED histograms).
OTEL_ENV: dict[str, dict[str, str]] = {
    "on": {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://{sink}",
        "PORTICO_METRICS_ENABLED": "true",
    },
    "off": {"OTEL_SDK_DISABLED": "true", "PORTICO_METRICS_ENABLED": "false"},
    # ``sampled``: production's settings (k8s/overlays/prod/patches/telemetry.yaml): as ``on``,
    # but the gateway keeps 1 trace in 20 (head sampling; the users service follows the
    # caller's decision) and tail capture records the unsampled failed or slow requests (the
    # thresholds' defaults), under its own service name so the sink counts its spans apart.
    "sampled": {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": PRODUCTION_RATIO,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://{sink}",
        "OTEL_SERVICE_NAME": "{component}-sampled",
        "PORTICO_METRICS_ENABLED": "true",
    },
}

#: The cached-GET pairs: gateway server → whether it answers cacheable reads itself (the edge
#: path, ``GATEWAY_EDGE_READS=true``) or calls the users service for each (``false``). Both run
#: production's telemetry (:data:`OTEL_ENV` ``sampled``, under their own service names) with
#: authentication on: the figures the issue's targets are stated in.
EDGE_PAIRS: dict[str, Literal["edge", "via users"]] = {
    "gateway_edge": "edge",
    "gateway_via_users": "via users",
}
EDGE_ENV: dict[str, dict[str, str]] = {
    "edge": {"GATEWAY_EDGE_READS": "true", "OTEL_SERVICE_NAME": "{component}-edge"},
    "via users": {"GATEWAY_EDGE_READS": "false", "OTEL_SERVICE_NAME": "{component}-via-users"},
}

#: The auth-overhead pairs: gateway server → its mode. Both run the same code with the stack's
#: environment; the ``off`` pair starts with ``bench/variants/auth_off`` first on its
#: ``PYTHONPATH`` (:data:`AUTH_OFF_PATH`), whose ``sitecustomize`` makes each process verify an
#: ``Authorization`` value once and then remember its principal: no signature check and no
#: session ``EXISTS`` per request, the access rules still applied (see that module).
AUTH_PAIRS: dict[str, Literal["on", "off"]] = {
    "gateway_auth_on": "on",
    "gateway_auth_off": "off",
}
AUTH_OFF_PATH = "bench/variants/auth_off"

#: How many times a request to each server has its access token verified on the way.
TOKEN_CHECKS: dict[str, int] = {
    "gateway": 2,  # the gateway, then the users service (each service checks it again)
    "users": 1,
    "monolith_verify": 1,
    "monolith": 0,
    "floor": 0,
    "gateway_otel_on": 2,
    "gateway_otel_off": 2,
    "gateway_otel_sampled": 2,
    "gateway_auth_on": 2,
    "gateway_auth_off": 0,  # looked up, not verified
    "gateway_edge": 1,  # the gateway answers; the users service is not called
    "gateway_via_users": 2,
}


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    server: str
    path: str = ""  # wrk: the request path; "{user}" is the cached user's id
    script: str | None = None  # wrk: scenario in bench/scripts/ (else a plain GET of ``path``)
    grpc_op: GrpcOp | None = None  # direct gRPC instead of wrk
    fixture: Fixture | None = None  # passed to the script / driver
    #: Sent without an access token (a probe's request): nothing to verify.
    anonymous: bool = False

    @property
    def processes(self) -> tuple[str, ...]:
        return PATHS[self.server]

    @property
    def token_checks(self) -> int:
        return 0 if self.anonymous else TOKEN_CHECKS[self.server]


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    title: str
    variants: tuple[Variant, ...]
    #: Whose access token every request of the case carries.
    caller: Caller = "admin"
    before_cell: Hook | None = None
    #: Count the Valkey entries a cell fills (after an emptied cache: its cache misses).
    count_fills: bool = False
    #: The variant the case's ratios are taken over the others of.
    full_path: str = FULL_PATH


CASES: tuple[Case, ...] = (
    Case(
        "get_cached",
        "GET /v1/users/{id} by its owner, served from the Valkey cache: by the gateway itself "
        "after its access check (edge), through the users service (via users), both at "
        "production telemetry; direct gRPC; and the same-run baselines",
        (
            Variant("edge", "gateway_edge", path="/v1/users/{user}"),
            Variant("via users", "gateway_via_users", path="/v1/users/{user}"),
            Variant("grpc", "users", grpc_op="get", fixture="cached_id"),
            Variant("mono+verify", "monolith_verify", path="/v1/users/{user}"),
            Variant("monolith", "monolith", path="/v1/users/{user}"),
            Variant("floor", "floor", path="/v1/users/{user}"),
        ),
        caller="owner",
        before_cell="warm_cached",
        full_path="edge",
    ),
    Case(
        "healthz",
        "GET /healthz as a probe sends it (no token): the gateway's fixed per-request pipeline "
        "(every middleware, routing, the access log) against a bare ASGI app under the same "
        "uvicorn (floor)",
        (
            Variant("gateway", "gateway", path="/healthz", anonymous=True),
            Variant("floor", "floor", path="/healthz", anonymous=True),
        ),
    ),
    Case(
        "otel_overhead",
        "GET /v1/users/{id} by its owner, cached, through gateway + users with tracing and "
        "request metrics on (always_on, OTLP export), at production settings (5% head "
        "sampling + tail capture) and off (OTEL_SDK_DISABLED, PORTICO_METRICS_ENABLED=false)",
        (
            Variant("otel on", "gateway_otel_on", path="/v1/users/{user}"),
            Variant("otel off", "gateway_otel_off", path="/v1/users/{user}"),
            Variant("otel prod", "gateway_otel_sampled", path="/v1/users/{user}"),
        ),
        caller="owner",
        before_cell="warm_cached",
        full_path="otel on",
    ),
    Case(
        "auth_overhead",
        "GET /v1/users/{id} by its owner, cached, through gateway + users with token checks "
        "(signature remembered per token, session EXISTS in Valkey, in each process) and with "
        "each process answering a token it has checked once from a dict (bench/variants/auth_off)",
        (
            Variant("auth on", "gateway_auth_on", path="/v1/users/{user}"),
            Variant("auth off", "gateway_auth_off", path="/v1/users/{user}"),
        ),
        caller="owner",
        before_cell="warm_cached",
        full_path="auth on",
    ),
    Case(
        "get_miss",
        "GET /v1/users/{id} by the admin, cache miss: read from PostgreSQL, then fill Valkey",
        (
            Variant("gateway", "gateway", script="get_each.lua", fixture="miss_ids"),
            Variant("grpc", "users", grpc_op="get", fixture="miss_ids"),
        ),
        before_cell="flush_cache",
        count_fills=True,
    ),
    Case(
        "list_20",
        "GET /v1/users?page_size=20 (ListUsers, first page)",
        (
            Variant("gateway", "gateway", path="/v1/users?page_size=20"),
            Variant("grpc", "users", grpc_op="list"),
        ),
    ),
    Case(
        "create",
        "POST /v1/users (CreateUser, a unique email each)",
        (
            Variant("gateway", "gateway", script="create.lua", fixture="tag"),
            Variant("grpc", "users", grpc_op="create", fixture="tag"),
        ),
    ),
    Case(
        "patch",
        "PATCH /v1/users/{id} with If-Match (UpdateUser with the current etag)",
        (
            Variant("gateway", "gateway", script="patch.lua", fixture="patch_pool"),
            Variant("grpc", "users", grpc_op="patch", fixture="patch_pool"),
        ),
        before_cell="refresh_etags",
    ),
)
