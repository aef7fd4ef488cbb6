"""The rendered settings against the apps: real settings only, valid values, reachable upstreams.

Each app's environment is rebuilt the way the kubelet builds it (``envFrom`` ConfigMap, then
``env`` in order, ``$(NAME)`` expanded, Secret values replaced by placeholders) and read by the
app's own settings class, so a misspelt name (silently ignored: ``extra="ignore"``), a value the
app refuses, or an upstream the NetworkPolicies block fails here rather than in a cluster.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from portico_audit.config import AuditSettings
from portico_auth.config import AuthSettings
from portico_common.config import TelemetrySettings
from portico_common.valkey import is_sentinel_url, parse_sentinel_url
from portico_gateway.config import GatewaySettings
from portico_migrations.config import MigrateSettings
from portico_users.config import UsersSettings
from tests.k8s.conftest import ROOT, Manifest, of_kind, one, pod_template

#: The settings class of each workload (OTEL_* is read by every one of them too).
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "users": UsersSettings,
    "auth": AuthSettings,
    "audit": AuditSettings,
    "migrations": MigrateSettings,
}
#: Overlays with NetworkPolicies (default deny).
POLICED = ("staging", "prod")
#: Connections that must be allowed (source, Service), besides whatever the settings name
#: (the HA overlays reach Valkey's Sentinels through ``valkey-headless`` instead).
REQUIRED_EDGES = {
    ("users", "auth"),
    ("audit", "auth"),
    ("gateway", "audit"),
    ("gateway", "valkey-cache"),  # the edge path (the cache instance has no Sentinel)
}
VALKEY_EDGES = {("audit", "valkey"), ("gateway", "valkey")}
#: Read by the OpenTelemetry SDK itself (``Resource.create``), not by a settings class.
SDK_VARIABLES = {"OTEL_RESOURCE_ATTRIBUTES"}
#: The platform's telemetry (argocd/: kube-prometheus-stack, opentelemetry-collector; checked
#: against those charts in test_platform.py): its namespace, and the labels of its pods.
OBSERVABILITY = "observability"
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
COLLECTOR = {"app.kubernetes.io/name": "otel-collector"}
APPS = ("gateway", "users", "auth", "audit")
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (nested groups joined with ``__``)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: set[str] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{path}{name.upper()}__")
            elif info.validation_alias is not None:
                names.update(str(c) for c in info.validation_alias.choices)  # type: ignore[union-attr]
            else:
                names.add(f"{path}{name.upper()}")

    walk(settings, prefix)
    return names


def container_env(docs: list[Manifest], workload: Manifest) -> tuple[dict[str, str], set[str]]:
    """The first container's environment as the kubelet builds it, and the names only used inside
    other values (``VALKEY_PASSWORD`` in ``redis://:$(VALKEY_PASSWORD)@…``)."""
    container = pod_template(workload)["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    referenced: set[str] = set()
    for var in container.get("env", []):
        if "value" in var:
            value: str = var["value"]
            for ref in _REF.findall(value):
                assert ref in env, f"{workload['metadata']['name']}: $({ref}) is not defined before"
                referenced.add(ref)
            env[var["name"]] = _REF.sub(lambda m: env[m.group(1)], value)
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            # URL-safe, like the real ones (hex passwords; CNPG's uri is a full DSN).
            env[var["name"]] = (
                "postgresql://portico:secret@postgres-rw:5432/portico"
                if ref["key"] == "uri"
                else f"secret-{ref['name']}-{ref['key']}"
            )
    return env, referenced


def app_settings(
    docs: list[Manifest], name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[BaseSettings, dict[str, str]]:
    """The workload's settings object, read from its rendered environment."""
    workload = next(
        w
        for w in [*of_kind(docs, "Deployment"), *of_kind(docs, "Job")]
        if w["metadata"]["name"] == name
    )
    env, _ = container_env(docs, workload)
    with monkeypatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return SETTINGS[name](), env


def test_every_variable_is_a_setting_of_its_app(docs: list[Manifest]) -> None:
    telemetry = env_names(TelemetrySettings) | SDK_VARIABLES
    for workload in [*of_kind(docs, "Deployment"), *of_kind(docs, "Job")]:
        name = workload["metadata"]["name"]
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("inject.istio.io/templates") == "gateway":
            continue  # Istio's ingress gateway (istio/): an Envoy, no Portico settings
        env, referenced = container_env(docs, workload)
        unknown = set(env) - env_names(SETTINGS[name]) - telemetry - referenced
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"


def test_every_app_accepts_its_settings(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS:
        app_settings(docs, name, monkeypatch)  # raises ValidationError on a refused value


def test_token_checks_agree_with_the_issuer(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, _ = app_settings(docs, "auth", monkeypatch)
    assert isinstance(auth, AuthSettings)
    for name in ("gateway", "users", "audit"):
        verifier, _ = app_settings(docs, name, monkeypatch)
        assert isinstance(verifier, GatewaySettings | UsersSettings | AuditSettings)
        assert (verifier.token_issuer, verifier.token_audience) == (auth.issuer, auth.audience)
        assert verifier.session_key_prefix == auth.valkey.key_prefix, name


def test_the_edge_path_reads_the_cache_the_users_service_writes(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's edge path (portico.edge.v1.cacheable reads) looks up the entries the users
    service writes: the same Valkey instance and the same key prefix."""
    gateway, _ = app_settings(docs, "gateway", monkeypatch)
    users, _ = app_settings(docs, "users", monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert isinstance(users, UsersSettings)
    assert gateway.edge_reads
    assert gateway.edge_cache_key_prefix == users.valkey.key_prefix
    assert gateway.valkey_cache_url is not None
    assert users.valkey.cache_url is not None
    edge = urlsplit(gateway.valkey_cache_url.get_secret_value())
    owner = urlsplit(users.valkey.cache_url.get_secret_value())
    assert (edge.hostname, edge.port, edge.path) == (owner.hostname, owner.port, owner.path)


def test_audit_consumes_the_stream_the_services_publish_to(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit, _ = app_settings(docs, "audit", monkeypatch)
    assert isinstance(audit, AuditSettings)
    for name in ("users", "auth"):
        publisher, _ = app_settings(docs, name, monkeypatch)
        assert isinstance(publisher, UsersSettings | AuthSettings)
        assert publisher.outbox.stream == audit.consumer.stream, name
    # One consumer name per process: the default (<hostname>-<pid>), never a shared fixed one.
    assert "AUDIT_CONSUMER__NAME" not in container_env(docs, one(docs, "Deployment", "audit"))[0]


def test_browser_facing_settings(
    rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for overlay, docs in rendered.items():
        gateway, _ = app_settings(docs, "gateway", monkeypatch)
        assert isinstance(gateway, GatewaySettings)
        # dev opens /docs; everywhere else they need an admin token.
        assert gateway.environment == ("dev" if overlay == "dev" else "production"), overlay
        assert all(o.startswith("https://") for o in gateway.cors_allow_origins), overlay
    prod, _ = app_settings(rendered["prod"], "gateway", monkeypatch)
    assert isinstance(prod, GatewaySettings)
    assert prod.hsts_max_age_s >= 31_536_000


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_allows(
    peer: Manifest, labels: dict[str, str], namespace: str, peer_namespace: str
) -> bool:
    """A ``from``/``to`` peer of a policy in ``namespace`` against a pod with ``labels`` in
    ``peer_namespace`` (ipBlock never matches: pod addresses are not known in advance)."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": peer_namespace}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif peer_namespace != namespace:  # a bare podSelector names pods of the policy's namespace
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _port_allows(ports: list[Manifest] | None, number: int, name: str) -> bool:
    if not ports:
        return True
    for port in ports:
        if port.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in port or port["port"] in (number, name):
            return True
        if isinstance(port["port"], int) and port["port"] <= number <= port.get("endPort", -1):
            return True
    return False


def allows(
    docs: list[Manifest],
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str],
    port: tuple[int, str],
    *,
    peer_namespace: str | None = None,
) -> bool:
    """Whether the NetworkPolicies let ``pod`` send to (Egress) / receive from (Ingress) ``peer``
    on the pod port ``(number, name)`` of the receiving side (NetworkPolicy semantics: a pod no
    policy selects for a direction is open in it; else the union of the rules applies).
    ``peer_namespace`` is the peer's namespace when it is not ``pod``'s own."""
    key = "to" if direction == "Egress" else "from"
    isolating = []
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]
        if direction in types and _selects(spec["podSelector"], pod):
            isolating.append(policy)
    if not isolating:
        return True
    for policy in isolating:
        namespace = policy["metadata"].get("namespace", "default")
        other = peer_namespace or namespace
        for rule in policy["spec"].get(direction.lower(), []):
            peers = rule.get(key)
            if (
                not peers or any(_peer_allows(p, peer, namespace, other) for p in peers)
            ) and _port_allows(rule.get("ports"), *port):
                return True
    return False


def _pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def backend(docs: list[Manifest], service_name: str, port: int) -> tuple[Manifest, int, str]:
    """The workload behind ``service_name:port`` and the container port (number, name) it hits."""
    service = one(docs, "Service", service_name)
    matching = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(matching) == 1, f"Service {service_name} has no port {port}"
    service_port = matching[0]
    (workload,) = (
        w
        for w in [*of_kind(docs, "Deployment"), *of_kind(docs, "StatefulSet")]
        if _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(w))
    )
    target = service_port.get("targetPort", port)
    for container in pod_template(workload)["containers"]:
        for cport in container.get("ports", []):
            if target in (cport["containerPort"], cport.get("name")):
                return workload, cport["containerPort"], cport.get("name", "")
    raise AssertionError(f"{service_name}:{port}: no container port {target!r}")


def _addresses(value: str) -> list[tuple[str, int | None]]:
    """The (host, port) pairs a ``*_TARGET`` / ``*_URL`` value names: each Sentinel of a
    ``valkey+sentinel://`` URL (:mod:`portico_common.valkey` parses it), else the one host."""
    if is_sentinel_url(value):
        return list(parse_sentinel_url(value).sentinels)
    parts = urlsplit(value if "://" in value else f"grpc://{value}")
    return [(parts.hostname or "", parts.port)]


def upstreams(docs: list[Manifest]) -> list[tuple[Manifest, str, int]]:
    """Every (workload, Service, port) an app's ``*_TARGET`` / ``*_URL`` setting points at; a
    pod's own name through a headless Service (``valkey-0.valkey-headless``) counts as that
    Service."""
    services = {s["metadata"]["name"] for s in of_kind(docs, "Service")}
    found = []
    for workload in of_kind(docs, "Deployment"):
        env, _ = container_env(docs, workload)
        for name, value in env.items():
            if not name.endswith(("_TARGET", "_URL")):
                continue
            for host, port in _addresses(value):
                service = host if host in services else host.partition(".")[2]
                if service in services and port:
                    found.append((workload, service, port))
    return found


@pytest.mark.parametrize("overlay", POLICED)
def test_network_policies_allow_every_configured_upstream(
    overlay: str, rendered: dict[str, list[Manifest]]
) -> None:
    docs = rendered[overlay]
    edges = upstreams(docs)
    named = {(w["metadata"]["name"], s) for w, s, _ in edges}
    assert named >= REQUIRED_EDGES
    assert named >= VALKEY_EDGES or named >= {(w, f"{s}-headless") for w, s in VALKEY_EDGES}
    for source, service, port in edges:
        target, number, name = backend(docs, service, port)
        src, dst = _pod_labels(source), _pod_labels(target)
        edge = f"{source['metadata']['name']} -> {service}:{port}"
        assert allows(docs, "Egress", src, dst, (number, name)), f"{overlay}: egress {edge}"
        assert allows(docs, "Ingress", dst, src, (number, name)), f"{overlay}: ingress {edge}"


def test_policy_check_refuses_what_default_deny_blocks(rendered: dict[str, list[Manifest]]) -> None:
    """The evaluator above is not vacuous: gateway -> PostgreSQL stays closed, and a peer no
    allow rule names is refused."""
    docs = rendered["prod"]
    gateway = _pod_labels(one(docs, "Deployment", "gateway"))
    postgres = {"cnpg.io/cluster": "postgres"}
    assert not allows(docs, "Egress", gateway, postgres, (5432, "postgresql"))
    assert not allows(docs, "Ingress", postgres, gateway, (5432, "postgresql"))
    _, number, name = backend(docs, "auth", 50052)
    stranger = {"app.kubernetes.io/name": "stranger"}
    auth = _pod_labels(one(docs, "Deployment", "auth"))
    assert not allows(docs, "Ingress", auth, stranger, (number, name))


def _metrics_port(
    docs: list[Manifest], name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """The container port (number, name) an app serves ``/metrics`` on, from its settings: the
    gateway's HTTP port, the services' ``*_METRICS_PORT`` (declared as a port named ``metrics``)."""
    settings, _ = app_settings(docs, name, monkeypatch)
    if isinstance(settings, GatewaySettings):
        number = settings.port
    else:
        assert isinstance(settings, UsersSettings | AuthSettings | AuditSettings)
        number = settings.metrics_port
    assert number, f"{name}: metrics are turned off"
    container = pod_template(one(docs, "Deployment", name))["containers"][0]
    declared = {p["containerPort"]: p.get("name", "") for p in container.get("ports", [])}
    assert number in declared, f"{name}: metrics port {number} is not a declared containerPort"
    if name != "gateway":
        assert declared[number] == "metrics", f"{name}: port {number} is named {declared[number]}"
    return number, declared[number]


@pytest.mark.parametrize("overlay", POLICED)
def test_prometheus_can_scrape_every_app(
    overlay: str, rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[overlay]
    for name in APPS:
        app = _pod_labels(one(docs, "Deployment", name))
        port = _metrics_port(docs, name, monkeypatch)
        scrape = f"{overlay}: prometheus -> {name}:{port[0]}"
        assert allows(docs, "Ingress", app, PROMETHEUS, port, peer_namespace=OBSERVABILITY), scrape
        # Not vacuous: other pods of that namespace, and a "prometheus" of another, stay out.
        if name != "gateway":  # the gateway's HTTP port is open to the edge anyway
            stranger = {"app.kubernetes.io/name": "grafana"}
            assert not allows(docs, "Ingress", app, stranger, port, peer_namespace=OBSERVABILITY)
            assert not allows(docs, "Ingress", app, PROMETHEUS, port, peer_namespace="elsewhere")
            assert not allows(docs, "Ingress", app, PROMETHEUS, port), "same-namespace prometheus"


#: Production's head-sampling ratio ceiling: what keeps telemetry within its 10% budget
#: (docs/benchmarks.md, "What telemetry costs"); the tail capture keeps the failures and slow ones.
PRODUCTION_RATIO = 0.05


@pytest.mark.parametrize("overlay", ["dev", *POLICED])
def test_staging_and_prod_sample_at_the_head_and_dev_traces_everything(
    overlay: str, rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in APPS:
        settings, env = app_settings(rendered[overlay], name, monkeypatch)
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            telemetry = TelemetrySettings()
        slow_s = getattr(settings, "trace_slow_s", None)
        assert slow_s is not None, f"{overlay} {name}: no tail-capture threshold"
        assert slow_s > 0, f"{overlay} {name}: slow requests would not be tail-captured"
        if overlay in POLICED:
            assert telemetry.traces_sampler == "parentbased_traceidratio", (overlay, name)
            assert 0 < telemetry.traces_sampler_arg <= PRODUCTION_RATIO, (overlay, name)
        else:
            assert telemetry.traces_sampler == "parentbased_always_on", (overlay, name)


@pytest.mark.parametrize("overlay", ["dev", *POLICED])
def test_every_app_sends_spans_to_the_collector(
    overlay: str, rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[overlay]
    for name in APPS:
        _, env = app_settings(docs, name, monkeypatch)
        endpoint = urlsplit(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        assert endpoint.scheme == "http", f"{overlay} {name}: OTLP/gRPC endpoint {endpoint}"
        host, port = endpoint.hostname or "", endpoint.port or 0
        assert host.split(".")[:3] == ["otel-collector", OBSERVABILITY, "svc"], host
        assert port == 4317, endpoint
        assert env["OTEL_SERVICE_NAME"] == name
        attributes = dict(a.split("=", 1) for a in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attributes["deployment.environment"] == overlay, attributes
        if overlay in POLICED:
            app = _pod_labels(one(docs, "Deployment", name))
            edge = f"{overlay}: {name} -> {host}:{port}"
            assert allows(
                docs, "Egress", app, COLLECTOR, (port, "otlp-grpc"), peer_namespace=OBSERVABILITY
            ), edge
            # Only that port there: the Jaeger UI (16686) is not the apps' business.
            assert not allows(
                docs, "Egress", app, COLLECTOR, (16686, ""), peer_namespace=OBSERVABILITY
            ), edge


def test_the_gateway_sends_a_forwarder_key_the_auth_service_accepts(
    docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of the forwarder key (SECURITY.md, "Who names the client address") come from
    one Secret that carries both: the key the gateway sends and the list auth accepts."""
    refs: dict[str, tuple[str, str]] = {}
    for name, variable in (("gateway", "GATEWAY_FORWARDER_KEY"), ("auth", "AUTH_FORWARDER_KEYS")):
        container = pod_template(one(docs, "Deployment", name))["containers"][0]
        found = [v for v in container.get("env", []) if v["name"] == variable]
        assert len(found) == 1, f"{name} does not read {variable} from a Secret"
        ref = found[0]["valueFrom"]["secretKeyRef"]
        refs[name] = (ref["name"], ref["key"])
    secret = refs["gateway"][0]
    assert refs["auth"][0] == secret, refs
    externals = {e["spec"]["target"]["name"]: e for e in of_kind(docs, "ExternalSecret")}
    if secret in externals:
        provided = {d["secretKey"] for d in externals[secret]["spec"]["data"]}
    else:  # dev: k8s/scripts/dev-secrets.sh makes it, with the same value on both sides
        script = (ROOT / "k8s" / "scripts" / "dev-secrets.sh").read_text()
        made = re.search(rf"create secret generic {secret} (.*?)\n\s*fi\n", script, re.DOTALL)
        assert made, f"neither an ExternalSecret nor dev-secrets.sh makes {secret}"
        provided = set(re.findall(r"--from-literal=([a-z-]+)=", made[1]))
    assert {refs["gateway"][1], refs["auth"][1]} <= provided, (refs, provided)
    gateway, _ = app_settings(docs, "gateway", monkeypatch)
    auth, _ = app_settings(docs, "auth", monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert isinstance(auth, AuthSettings)
    assert gateway.forwarder_key.get_secret_value()
    assert auth.forwarder_keys
