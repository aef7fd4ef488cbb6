"""The Istio component (istio/) as rendered into staging and prod: mTLS, who may call whom,
routes, timeouts and retries against the apps' own deadlines, the edge, and the opt-in chaos drill.

Nothing here talks to a cluster: each check compares the mesh objects with the rest of the render
(ServiceAccounts, Services, ports, settings), with the protos (gRPC method paths, REST routes) and
with the apps' sources where a policy restates what the code calls.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from grpc_health.v1 import health_pb2

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_auth.config import AuthSettings
from portico_gateway.config import GatewaySettings
from tests.k8s.conftest import ROOT, TOOLS, Manifest, of_kind, one, pod_template, yaml_to_json
from tests.k8s.test_wiring import allows, app_settings, upstreams

#: Overlays that opt into istio/ (dev has no mesh: kind/minikube without Istio, and `make run`).
MESHED = ("staging", "prod")
APPS = ("gateway", "users", "auth", "audit")
#: The only conditions the mesh retries on (one layer retries: docs/api.md, "Retries").
RETRY_ON = {"unavailable", "connect-failure", "reset"}
#: The gRPC health service the gateway's /readyz calls on each upstream.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
ISTIO_GROUPS = ("security.istio.io", "networking.istio.io", "telemetry.istio.io")
CHAOS = ROOT / "tests" / "k8s" / "fixtures" / "staging-chaos"
NODE_TOOLS = TOOLS.with_name("k8s-node")


@pytest.fixture(params=MESHED)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def mesh(overlay: str, rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    """One meshed overlay's documents."""
    return rendered[overlay]


# ---------------------------------------------------------------------------------- helpers


def namespace_of(docs: list[Manifest]) -> str:
    (namespace,) = {d["metadata"]["namespace"] for d in of_kind(docs, "ServiceAccount")}
    return str(namespace)


def workloads(docs: list[Manifest]) -> list[Manifest]:
    """Everything that runs pods from a template of its own (Rollouts reuse a Deployment's)."""
    return [*of_kind(docs, "Deployment"), *of_kind(docs, "StatefulSet"), *of_kind(docs, "Job")]


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selected(docs: list[Manifest], selector: dict[str, str]) -> list[Manifest]:
    """The workloads whose pods carry every label of ``selector``."""
    return [
        w for w in workloads(docs) if all(pod_labels(w).get(k) == v for k, v in selector.items())
    ]


def seconds(duration: str) -> float:
    """An Istio / Go duration such as ``10s``, ``1m``, ``300ms``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert match, duration
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def rules_from(policy: Manifest) -> Iterator[tuple[set[str], set[str], Manifest]]:
    """(the callers' ServiceAccount names, or {"*"} for any caller, even one without a mesh
    identity; the ServiceAccounts excluded; one `to` operation) triples."""
    for rule in policy["spec"].get("rules", []):
        callers: set[str] = set()
        excluded: set[str] = set()
        for source in (s["source"] for s in rule.get("from", [])):
            assert set(source) <= {"serviceAccounts", "notServiceAccounts"}, source
            callers |= set(source.get("serviceAccounts", []))
            excluded |= set(source.get("notServiceAccounts", []))
        for operation in (t["operation"] for t in rule.get("to", [])):
            yield callers or {"*"}, excluded, operation


def grpc_methods() -> dict[str, set[str]]:
    """Every gRPC service of the protos the apps serve, with its method names."""
    # grpc_health's stubs type its DESCRIPTOR as upb's own FileDescriptor.
    files: list[Any] = [
        users_pb2.DESCRIPTOR,
        auth_pb2.DESCRIPTOR,
        audit_pb2.DESCRIPTOR,
        health_pb2.DESCRIPTOR,
    ]
    return {
        s.full_name: {m.name for m in s.methods} for f in files for s in f.services_by_name.values()
    }


def http_routes() -> dict[str, str]:
    """Each REST route the gateway transcodes (path template -> /Service/Method)."""
    routes = {}
    for file in (users_pb2.DESCRIPTOR, auth_pb2.DESCRIPTOR, audit_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                pattern = rule.WhichOneof("pattern")
                if pattern:
                    routes[getattr(rule, pattern)] = f"/{service.full_name}/{method.name}"
    return routes


Rule = tuple[set[str], set[str], Manifest]


def allowed(docs: list[Manifest], app: str) -> list[Rule]:
    """The app's ALLOW rules (see rules_from)."""
    found: list[Rule] = []
    for policy in of_kind(docs, "AuthorizationPolicy"):
        selector = policy["spec"].get("selector", {}).get("matchLabels")
        if selector and selected(docs, selector) == [one(docs, "Deployment", app)]:
            found.extend(rules_from(policy))
    return found


def named_callers(docs: list[Manifest], app: str) -> set[str]:
    """The ServiceAccounts that some rule of the app names as callers ("*" for any caller)."""
    return {caller for callers, _, _ in allowed(docs, app) for caller in callers}


def path_matches(pattern: str, path: str) -> bool:
    """Istio's path match: exact, prefix ``/a/*``, suffix ``*/b`` or presence ``*``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def operation_allows(operation: Manifest, *, port: int, method: str, path: str) -> bool:
    if "ports" in operation and str(port) not in operation["ports"]:
        return False
    if "methods" in operation and method not in operation["methods"]:
        return False
    if "paths" in operation and not any(path_matches(p, path) for p in operation["paths"]):
        return False
    return not any(path_matches(p, path) for p in operation.get("notPaths", []))


def may_call(
    docs: list[Manifest], caller: str | None, app: str, *, port: int, method: str, path: str
) -> bool:
    """Whether the app's policies let ``caller`` (a ServiceAccount, None = no mesh identity)
    send ``method path`` to ``port``."""
    return any(
        operation_allows(operation, port=port, method=method, path=path)
        for callers, excluded, operation in allowed(docs, app)
        if ("*" in callers or caller in callers) and (caller is None or caller not in excluded)
    )


def container_port(docs: list[Manifest], app: str, name: str) -> int:
    ports = {
        p["name"]: p["containerPort"]
        for c in pod_template(one(docs, "Deployment", app))["containers"]
        for p in c.get("ports", [])
    }
    return int(ports[name])


def edge_vs(docs: list[Manifest]) -> Manifest:
    (vs,) = (v for v in of_kind(docs, "VirtualService") if v["spec"].get("gateways"))
    return vs


def route_matches(route: Manifest, path: str) -> bool:
    """An HTTP route's `match` list (OR of uri exact/prefix) against a request path."""
    for match in route.get("match", [{}]):
        uri = match.get("uri", {})
        if "exact" in uri and path == uri["exact"]:
            return True
        if "prefix" in uri and path.startswith(uri["prefix"]):
            return True
        if not uri:
            return True
    return False


# ---------------------------------------------------------------------------------- opt-in


def test_staging_and_prod_opt_in_and_dev_stays_plain(rendered: dict[str, list[Manifest]]) -> None:
    for overlay, docs in rendered.items():
        groups = {d["apiVersion"].split("/")[0] for d in docs}
        assert bool(groups & set(ISTIO_GROUPS)) == (overlay in MESHED), overlay
        kustomization = (ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        components = yaml_to_json(kustomization)[0].get("components", [])
        if overlay in MESHED:
            # The environment layer right after istio/, and the Rollouts after both.
            start = components.index("../../../istio")
            assert components[start + 1] == f"../../../istio/environments/{overlay}"
            assert components.index("../../components/rollouts") > start + 1
        assert not any("fault-injection" in c for c in components), overlay


def test_sidecars_only_for_the_apps(mesh: list[Manifest]) -> None:
    injected = {
        w["metadata"]["name"]
        for w in workloads(mesh)
        if pod_labels(w).get("sidecar.istio.io/inject") == "true"
    }
    assert injected == {*APPS, "ingress-gateway"}
    # A sidecar would keep the Job's pod running after the migration (istio/istio#11045).
    job = one(mesh, "Job", "migrations")["spec"]["template"]["metadata"]
    assert job["annotations"]["sidecar.istio.io/inject"] == "false"
    for app in APPS:
        deployment = one(mesh, "Deployment", app)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        config = json.loads(annotations["proxy.istio.io/config"])
        assert config["holdApplicationUntilProxyStarts"] is True
        # The proxy outlives the app's shutdown and fits in the pod's grace period.
        container = pod_template(deployment)["containers"][0]
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = pod_template(deployment)["terminationGracePeriodSeconds"]
        assert pre_stop + 1 + 10 < seconds(config["terminationDrainDuration"]) < grace, app


# ---------------------------------------------------------------------------------- mTLS


def test_mtls_is_strict_with_one_documented_exception(mesh: list[Manifest]) -> None:
    policies = of_kind(mesh, "PeerAuthentication")
    (namespace_wide,) = (p for p in policies if "selector" not in p["spec"])
    assert namespace_wide["spec"] == {"mtls": {"mode": "STRICT"}}
    for policy in policies:
        assert policy["spec"]["mtls"]["mode"] == "STRICT", policy["metadata"]["name"]
    # The only plaintext port: the gateway's HTTP port (Prometheus and istiod, see below).
    loosened = {
        (tuple(sorted(p["spec"]["selector"]["matchLabels"].items())), port, mode["mode"])
        for p in policies
        for port, mode in p["spec"].get("portLevelMtls", {}).items()
    }
    gateway = tuple(
        sorted(one(mesh, "Deployment", "gateway")["spec"]["selector"]["matchLabels"].items())
    )
    assert loosened == {(gateway, str(container_port(mesh, "gateway", "http")), "PERMISSIVE")}


def test_plaintext_reaches_only_metrics_and_the_jwks(mesh: list[Manifest]) -> None:
    port = container_port(mesh, "gateway", "http")
    jwks = next(p for p, rpc in http_routes().items() if rpc.endswith("/GetJwks"))
    for path in ("/metrics", jwks):
        assert may_call(mesh, None, "gateway", port=port, method="GET", path=path), path
    for method, path in (("GET", "/v1/users/me"), ("POST", "/metrics"), ("GET", "/readyz")):
        assert not may_call(mesh, None, "gateway", port=port, method=method, path=path), path


def test_prometheus_still_scrapes_every_app(mesh: list[Manifest]) -> None:
    """The gateway's /metrics: plaintext on its HTTP port (above). The services' metrics ports
    are not intercepted by their proxies at all."""
    for app in ("users", "auth", "audit"):
        annotations = one(mesh, "Deployment", app)["spec"]["template"]["metadata"]["annotations"]
        excluded = annotations["traffic.sidecar.istio.io/excludeInboundPorts"].split(",")
        assert excluded == [str(container_port(mesh, app, "metrics"))], app


# ---------------------------------------------------------------------------------- authorization


def test_authorization_denies_by_default(mesh: list[Manifest]) -> None:
    policies = of_kind(mesh, "AuthorizationPolicy")
    assert one(mesh, "AuthorizationPolicy", "allow-nothing")["spec"] == {}
    for policy in policies:
        spec = policy["spec"]
        if policy["metadata"]["name"] == "allow-nothing":
            continue
        assert spec["action"] == "ALLOW", policy["metadata"]["name"]
        # Each policy is about exactly one workload of the namespace.
        assert len(selected(mesh, spec["selector"]["matchLabels"])) == 1, policy["metadata"]["name"]
        for _, _, operation in rules_from(policy):
            (workload,) = selected(mesh, spec["selector"]["matchLabels"])
            declared = {
                str(p["containerPort"])
                for c in pod_template(workload)["containers"]
                for p in c.get("ports", [])
            }
            assert set(operation["ports"]) <= declared, policy["metadata"]["name"]
        for rule in spec["rules"]:
            # Public routes (sign-up, token, refresh, logout, JWKS, /healthz) take no token.
            for source in rule.get("from", []):
                assert "requestPrincipals" not in source["source"]


def test_every_principal_is_a_real_service_account(mesh: list[Manifest]) -> None:
    namespace = namespace_of(mesh)
    accounts = {
        f"cluster.local/ns/{a['metadata']['namespace']}/sa/{a['metadata']['name']}"
        for a in of_kind(mesh, "ServiceAccount")
    }
    running = {
        f"cluster.local/ns/{namespace}/sa/{pod_template(w)['serviceAccountName']}"
        for w in workloads(mesh)
    }
    for policy in of_kind(mesh, "AuthorizationPolicy"):
        for callers, excluded, _ in rules_from(policy):
            for caller in (callers | excluded) - {"*"}:
                # `serviceAccounts: [name]` is the policy's own namespace (Istio >= 1.25).
                assert "/" not in caller, caller
                principal = f"cluster.local/ns/{policy['metadata']['namespace']}/sa/{caller}"
                assert principal in accounts, principal
                assert principal in running, f"{principal}: no pod runs as it"


def test_who_may_call_whom(mesh: list[Manifest]) -> None:
    """Only the gateway calls users, auth and audit (besides auth -> users, and users -> auth
    and audit -> auth, each for what its code calls); only the ingress gateway calls the
    gateway."""
    callers = {app: named_callers(mesh, app) - {"*"} for app in (*APPS, "ingress-gateway")}
    assert callers == {
        "gateway": {"ingress-gateway"},
        "users": {"gateway", "auth"},
        "auth": {"gateway", "users", "audit"},
        "audit": {"gateway"},
        "ingress-gateway": set(),  # the internet: any caller, on the listener ports
    }
    assert named_callers(mesh, "ingress-gateway") == {"*"}
    methods = grpc_methods()
    for app, service in (
        ("users", "portico.users.v1.UserService"),
        ("auth", "portico.auth.v1.AuthService"),
        ("audit", "portico.audit.v1.AuditService"),
    ):
        port = container_port(mesh, app, "grpc")
        for method in methods[service]:
            path = f"/{service}/{method}"
            assert may_call(mesh, "gateway", app, port=port, method="POST", path=path), path
            assert not may_call(mesh, "ingress-gateway", app, port=port, method="POST", path=path)
            assert not may_call(mesh, None, app, port=port, method="POST", path=path), path
        assert may_call(mesh, "gateway", app, port=port, method="POST", path=HEALTH_CHECK)
    # The ingress gateway reaches every published route of the gateway, and nothing else does.
    port = container_port(mesh, "gateway", "http")
    for route, _ in http_routes().items():
        path = route.replace("{id}", "00000000-0000-0000-0000-000000000000")
        assert may_call(mesh, "ingress-gateway", "gateway", port=port, method="POST", path=path)
        assert not may_call(mesh, "users", "gateway", port=port, method="POST", path=path)
    assert not may_call(
        mesh, "ingress-gateway", "gateway", port=port, method="GET", path="/metrics"
    )


def _called_by_source(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text()))


def test_service_to_service_rules_match_what_the_code_calls(mesh: list[Manifest]) -> None:
    """auth -> users, users -> auth and audit -> auth: exactly the RPCs the clients in the code
    make (users and audit fetch the JWKS through portico_common.tokens)."""
    auth_calls = _called_by_source(
        ROOT / "services/auth/src/portico_auth/users_client.py", r"self\._stub\.(\w+)\b"
    )
    users_calls = _called_by_source(
        ROOT / "libs/common/src/portico_common/tokens.py",
        r'"/portico\.auth\.v1\.AuthService/(\w+)"',
    )
    assert auth_calls == {"CreateUser", "GetUser", "ListUsers", "DeleteUser"}
    assert users_calls == {"GetJwks"}
    methods = grpc_methods()
    for caller, app, service, calls in (
        ("auth", "users", "portico.users.v1.UserService", auth_calls),
        ("users", "auth", "portico.auth.v1.AuthService", users_calls),
        ("audit", "auth", "portico.auth.v1.AuthService", users_calls),
    ):
        port = container_port(mesh, app, "grpc")
        for method in methods[service]:
            path = f"/{service}/{method}"
            expected = method in calls
            assert may_call(mesh, caller, app, port=port, method="POST", path=path) == expected, (
                path
            )


def test_grpc_paths_name_real_methods(mesh: list[Manifest]) -> None:
    methods = grpc_methods()
    for policy in of_kind(mesh, "AuthorizationPolicy"):
        for _, _, operation in rules_from(policy):
            if policy["metadata"]["name"] not in ("users", "auth", "audit"):
                continue
            for path in operation["paths"]:
                service, method = path.lstrip("/").split("/")
                assert service in methods, path
                assert method == "*" or method in methods[service], path


def test_every_configured_upstream_is_allowed(mesh: list[Manifest]) -> None:
    """Each *_TARGET an app's settings name (test_wiring.upstreams) is open to that app's
    ServiceAccount in the mesh too, for the health check or at least one RPC."""
    for workload, service, _ in upstreams(mesh):
        if service not in APPS:
            continue  # valkey: no sidecar, no mesh policy
        caller = pod_template(workload)["serviceAccountName"]
        port = container_port(mesh, service, "grpc")
        operations = [o for callers, _, o in allowed(mesh, service) if caller in callers]
        assert operations, f"{caller} -> {service}: no rule"
        assert all(str(port) in o["ports"] for o in operations)


# ---------------------------------------------------------------------------------- routing


def test_routes_and_policies_name_real_services(mesh: list[Manifest]) -> None:
    services = {s["metadata"]["name"]: s for s in of_kind(mesh, "Service")}
    for rule in of_kind(mesh, "DestinationRule"):
        assert rule["spec"]["host"] in services, rule["metadata"]["name"]
    for vs in of_kind(mesh, "VirtualService"):
        if not vs["spec"].get("gateways"):
            assert all(h in services for h in vs["spec"]["hosts"]), vs["metadata"]["name"]
        for route in vs["spec"]["http"]:
            for destination in (r["destination"] for r in route["route"]):
                service = services[destination["host"]]
                ports = {p["port"] for p in service["spec"]["ports"]}
                assert destination["port"]["number"] in ports, destination
            assert sum(r["weight"] for r in route["route"]) == 100


def test_every_app_host_has_a_destination_rule(mesh: list[Manifest]) -> None:
    rules = {
        r["spec"]["host"]: r["spec"]["trafficPolicy"] for r in of_kind(mesh, "DestinationRule")
    }
    for app in APPS:
        policy = rules[app]
        assert policy["tls"] == {"mode": "ISTIO_MUTUAL"}
        assert {"tcp", "http"} <= policy["connectionPool"].keys()
        outliers = policy["outlierDetection"]
        assert outliers["consecutiveGatewayErrors"] > 0
        assert 0 < outliers["maxEjectionPercent"] <= 50
    # Every host a route sends to has a rule (Rollouts' -stable / -canary included).
    for vs in of_kind(mesh, "VirtualService"):
        for route in vs["spec"]["http"]:
            for destination in route["route"]:
                assert destination["destination"]["host"] in rules


def test_timeouts_exceed_the_apps_deadlines(
    mesh: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _ = app_settings(mesh, "gateway", monkeypatch)
    auth, _ = app_settings(mesh, "auth", monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    assert isinstance(auth, AuthSettings)
    # The callers' deadlines per upstream (users/audit -> auth: the JWKS fetch, 2 s in
    # portico_common).
    deadlines = {
        "users": max(gateway.rpc_timeout_s, auth.signup.users_timeout_s),
        "auth": gateway.rpc_timeout_s,
        "audit": gateway.rpc_timeout_s,
    }
    for app, deadline in deadlines.items():
        (route,) = one(mesh, "VirtualService", app)["spec"]["http"]
        assert seconds(route["timeout"]) > deadline, app
        assert "perTryTimeout" not in route["retries"], app  # one try may use the whole deadline
    (edge,) = edge_vs(mesh)["spec"]["http"]
    assert seconds(edge["timeout"]) > gateway.rpc_timeout_s


def test_retries_only_on_the_allowed_conditions(mesh: list[Manifest]) -> None:
    for vs in of_kind(mesh, "VirtualService"):
        for route in vs["spec"]["http"]:
            retries = route["retries"]
            assert set(retries["retryOn"].split(",")) <= RETRY_ON, vs["metadata"]["name"]
            assert 1 <= retries["attempts"] <= 2


def test_one_layer_retries_the_mesh_or_the_gateway(
    rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meshed overlays turn the gateway's retries off (patches/retries.yaml); dev keeps them."""
    for overlay, docs in rendered.items():
        gateway, _ = app_settings(docs, "gateway", monkeypatch)
        assert isinstance(gateway, GatewaySettings)
        assert (gateway.retry_max_attempts == 1) == (overlay in MESHED), overlay


# ---------------------------------------------------------------------------------- the edge


def test_edge_gateway_tls_and_hosts_agree(
    mesh: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    gateway = one(mesh, "Gateway", "ingress-gateway")["spec"]
    # The selector matches this namespace's ingress pods only, and differs per environment
    # (Istio matches Gateway selectors across namespaces).
    assert selected(mesh, gateway["selector"]) == [one(mesh, "Deployment", "ingress-gateway")]
    selectors = {
        json.dumps(one(rendered[o], "Gateway", "ingress-gateway")["spec"]["selector"])
        for o in MESHED
    }
    assert len(selectors) == len(MESHED)
    https = next(s for s in gateway["servers"] if s["port"]["protocol"] == "HTTPS")
    http = next(s for s in gateway["servers"] if s["port"]["protocol"] == "HTTP")
    assert http["tls"] == {"httpsRedirect": True}
    certificate = one(mesh, "Certificate", "ingress-gateway")["spec"]
    assert https["tls"]["mode"] == "SIMPLE"
    assert https["tls"]["credentialName"] == certificate["secretName"]
    hosts = set(certificate["dnsNames"])
    assert set(https["hosts"]) == set(http["hosts"]) == set(edge_vs(mesh)["spec"]["hosts"]) == hosts
    assert not any(h.endswith(".portico.invalid") for h in hosts), "environment layer missing"
    assert edge_vs(mesh)["spec"]["gateways"] == ["ingress-gateway"]
    # The Service's ports lead to the container ports the Gateway's servers listen on.
    service = one(mesh, "Service", "ingress-gateway")["spec"]
    by_port = {p["port"]: p["targetPort"] for p in service["ports"]}
    assert by_port == {443: "https", 80: "http"}
    assert {s["port"]["number"] for s in gateway["servers"]} == set(by_port)


def test_edge_publishes_the_api_and_not_the_internals(mesh: list[Manifest]) -> None:
    (route,) = edge_vs(mesh)["spec"]["http"]
    for template in http_routes():
        path = template.replace("{id}", "00000000-0000-0000-0000-000000000000")
        assert route_matches(route, path), path
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert route_matches(route, path), path
    for path in ("/metrics", "/readyz"):
        assert not route_matches(route, path), path


def test_jwt_at_the_edge_uses_the_auth_services_jwks(
    mesh: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    (request_auth,) = of_kind(mesh, "RequestAuthentication")
    spec = request_auth["spec"]
    assert selected(mesh, spec["selector"]["matchLabels"]) == [
        one(mesh, "Deployment", "ingress-gateway")
    ]
    (rule,) = spec["jwtRules"]
    auth, _ = app_settings(mesh, "auth", monkeypatch)
    assert isinstance(auth, AuthSettings)
    assert rule["issuer"] == auth.issuer
    assert rule["audiences"] == [auth.audience]
    # The gateway verifies the token (and its session) again: the header must reach it.
    assert rule["forwardOriginalToken"] is True
    # In-cluster, by the FQDN istiod can resolve from its own namespace, on the gateway's
    # Service port, at the route AuthService.GetJwks is transcoded to.
    jwks = next(p for p, rpc in http_routes().items() if rpc.endswith("/GetJwks"))
    port = one(mesh, "Service", "gateway")["spec"]["ports"][0]["port"]
    namespace = namespace_of(mesh)
    assert rule["jwksUri"] == f"http://gateway.{namespace}.svc.cluster.local:{port}{jwks}"


def test_tracing_sampling_is_left_to_the_collector(mesh: list[Manifest]) -> None:
    (telemetry,) = of_kind(mesh, "Telemetry")
    assert "selector" not in telemetry["spec"]  # the whole namespace
    (tracing,) = telemetry["spec"]["tracing"]
    assert tracing["randomSamplingPercentage"] == 100


def test_mesh_network_policies_let_the_proxies_work(mesh: list[Manifest]) -> None:
    """With default deny (which every meshed overlay has, so istio/'s policies only widen it):
    each proxy reaches istiod, the internet reaches the ingress gateway, which reaches the
    gateway; nothing else is opened."""
    assert one(mesh, "NetworkPolicy", "default-deny")["spec"]["podSelector"] == {}
    istiod = {"app": "istiod"}
    for workload in selected(mesh, {"sidecar.istio.io/inject": "true"}):
        labels = pod_labels(workload)
        assert allows(mesh, "Egress", labels, istiod, (15012, ""), peer_namespace="istio-system")
        assert not allows(mesh, "Egress", labels, istiod, (15012, ""), peer_namespace="elsewhere")
    ingress = pod_labels(one(mesh, "Deployment", "ingress-gateway"))
    gateway = pod_labels(one(mesh, "Deployment", "gateway"))
    internet = {"app.kubernetes.io/name": "anyone"}
    for number, name in ((8080, "http"), (8443, "https")):
        assert allows(mesh, "Ingress", ingress, internet, (number, name), peer_namespace="anywhere")
    assert allows(mesh, "Egress", ingress, gateway, (8000, "http"))
    assert allows(mesh, "Ingress", gateway, ingress, (8000, "http"))
    users = pod_labels(one(mesh, "Deployment", "users"))
    assert not allows(mesh, "Egress", ingress, users, (50051, "grpc"))


# ---------------------------------------------------------------------------------- chaos drill


def _render(directory: Path) -> str:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required (kustomize is built in): it renders the overlays")
    return subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout


def test_fault_injection_renders_on_staging_and_validates(
    tmp_path: Path, rendered: dict[str, list[Manifest]]
) -> None:
    text = _render(CHAOS)
    out = tmp_path / "staging-chaos.yaml"
    out.write_text(text)
    # The same validators as `make k8s-check` (built-in kinds; CNPG; npm models for the rest).
    subprocess.run(
        [
            str(TOOLS / "bin" / "kubernetes-validate"),
            "--strict",
            "-k",
            "1.32.0",
            "--quiet",
            "--no-warn",
            str(out),
        ],
        check=True,
    )
    subprocess.run(
        [str(TOOLS / "bin" / "python"), str(ROOT / "k8s/tools/validate_crs.py"), str(out)],
        check=True,
    )
    if not (NODE_TOOLS / "node_modules").is_dir():
        pytest.fail(f"{NODE_TOOLS} is missing: run `make k8s-check` (it installs its tools)")
    shutil.copy(ROOT / "k8s/tools/validate-crs.mjs", NODE_TOOLS / "validate-crs.mjs")
    subprocess.run(
        ["node", str(NODE_TOOLS / "validate-crs.mjs"), str(out.with_suffix(".crs.json"))],
        check=True,
    )
    chaos = yaml_to_json(text)
    staging = rendered["staging"]
    # Only the users and auth routes change, and only by their faults.
    changed = {
        (d["kind"], d["metadata"]["name"])
        for d in chaos
        if d != one(staging, d["kind"], d["metadata"]["name"])
    }
    assert changed == {("VirtualService", "users"), ("VirtualService", "auth")}
    gateway_deadline = GatewaySettings.model_fields["rpc_timeout_s"].default
    for app in ("users", "auth"):
        (route,) = one(chaos, "VirtualService", app)["spec"]["http"]
        fault = route.pop("fault")
        assert [route] == one(staging, "VirtualService", app)["spec"]["http"]
        delay = seconds(fault["delay"]["fixedDelay"])
        # Past the gateway's deadline (so the drill exercises it), inside the route timeout.
        assert gateway_deadline < delay < seconds(route["timeout"])
        assert fault["abort"]["grpcStatus"] == "UNAVAILABLE"
        for kind in ("delay", "abort"):
            assert 0 < fault[kind]["percentage"]["value"] <= 10


def test_istio_yaml_is_lint_clean() -> None:
    """yamllint as `make k8s-check` runs it on k8s/, for the files outside k8s/ added here."""
    yamllint = TOOLS / "bin" / "yamllint"
    paths = [str(ROOT / "istio"), str(ROOT / "tests" / "k8s" / "fixtures")]
    subprocess.run(
        [str(yamllint), "--strict", "-c", str(ROOT / ".yamllint.yaml"), *paths], check=True
    )


def test_readme_fragment_names_what_it_documents() -> None:
    readme = (ROOT / "istio" / "README.md").read_text()
    for needle in ("fault-injection", "x-portico-canary", "kubectl argo rollouts", "PERMISSIVE"):
        assert needle in readme, needle
