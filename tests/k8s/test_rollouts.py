"""The Rollouts component (k8s/components/rollouts) as rendered into staging and prod: every
reference resolves, the steps and the traffic split are the agreed ones, and the analysis asks
Prometheus about metrics the apps really emit."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.k8s.conftest import ROOT, Manifest, of_kind, one, yaml_to_json

#: Overlays with canary Rollouts (dev: plain Deployments, no Argo Rollouts controller).
CANARIED = ("staging", "prod")
APPS = ("gateway", "users", "auth", "audit")
WEIGHTS = [10, 25, 50, 100]
HEADER = ("x-portico-canary", {"exact": "always"})
#: The server-side failures of the SLIs (observability/prometheus/rules).
GRPC_FAILURES = {"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS"}
_ARG = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")


@pytest.fixture(params=CANARIED)
def canaried(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    docs: list[Manifest] = rendered[request.param]
    return docs


@pytest.fixture(scope="module")
def semconv() -> dict[str, Any]:
    """observability/semconv.yaml's metrics by name."""
    (registry,) = yaml_to_json((ROOT / "observability" / "semconv.yaml").read_text())
    return {m["name"]: m for m in registry["metrics"]}


def canary(rollout: Manifest) -> Any:
    return rollout["spec"]["strategy"]["canary"]


def steps(rollout: Manifest) -> list[Manifest]:
    result: list[Manifest] = canary(rollout)["steps"]
    return result


def test_dev_has_no_rollouts(rendered: dict[str, list[Manifest]]) -> None:
    assert not of_kind(rendered["dev"], "Rollout")
    assert all(d["spec"].get("replicas", 1) >= 1 for d in of_kind(rendered["dev"], "Deployment"))


def test_every_app_runs_as_a_rollout_of_its_deployment(canaried: list[Manifest]) -> None:
    assert {r["metadata"]["name"] for r in of_kind(canaried, "Rollout")} == set(APPS)
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        ref = rollout["spec"]["workloadRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        deployment = one(canaried, "Deployment", ref["name"])
        # The Deployment only holds the template; the Rollout runs (and owns the scale of) pods.
        assert deployment["spec"]["replicas"] == 0, name
        assert "template" not in rollout["spec"], name
        assert rollout["spec"]["selector"] == deployment["spec"]["selector"], name
        hpa = one(canaried, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]
        assert hpa == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": name}
        # The PodDisruptionBudget counts the Rollout's pods: they carry the template's labels.
        pdb = one(canaried, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
        template = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb.items() <= template.items()
        # Abort on no progress too, and never a dry run: a failure must roll back.
        assert rollout["spec"]["progressDeadlineAbort"] is True
        assert "dryRun" not in canary(rollout).get("analysis", {})


def test_stable_and_canary_services_mirror_the_apps_service(canaried: list[Manifest]) -> None:
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        app_service = one(canaried, "Service", name)["spec"]
        for role in ("stableService", "canaryService"):
            service = one(canaried, "Service", canary(rollout)[role])["spec"]
            assert service["selector"] == app_service["selector"], (name, role)
            assert service["ports"] == app_service["ports"], (name, role)
        assert canary(rollout)["stableService"] != canary(rollout)["canaryService"]


def test_istio_routes_split_between_stable_and_canary(canaried: list[Manifest]) -> None:
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        routing = canary(rollout)["trafficRouting"]
        vs_ref = routing["istio"]["virtualService"]
        vs = one(canaried, "VirtualService", vs_ref["name"])
        routes = {r.get("name"): r for r in vs["spec"]["http"]}
        for route_name in vs_ref["routes"]:
            destinations = {
                d["destination"]["host"]: d["weight"] for d in routes[route_name]["route"]
            }
            assert destinations == {
                canary(rollout)["stableService"]: 100,
                canary(rollout)["canaryService"]: 0,
            }, name
        # Rollouts owns the managed routes: none of them may already be in git.
        managed = {m["name"] for m in routing["managedRoutes"]}
        assert not managed & set(routes), name


def test_canary_steps(canaried: list[Manifest]) -> None:
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        plan = steps(rollout)
        assert [s["setWeight"] for s in plan if "setWeight" in s] == WEIGHTS, name
        # Every weight is held for a while before the next (the analysis needs samples).
        for index, step in enumerate(plan):
            if "setWeight" in step:
                assert "duration" in plan[index + 1].get("pause", {}), (name, index)
        # Testers first: a header route to one canary pod, before any weighted traffic.
        first_weight = next(i for i, s in enumerate(plan) if "setWeight" in s)
        (header,) = [s["setHeaderRoute"] for s in plan[:first_weight] if "setHeaderRoute" in s]
        assert header["name"] in {
            m["name"] for m in canary(rollout)["trafficRouting"]["managedRoutes"]
        }
        (match,) = header["match"]
        assert (match["headerName"], match["headerValue"]) == HEADER
        scales = [s["setCanaryScale"] for s in plan[:first_weight] if "setCanaryScale" in s]
        assert scales[0] == {"replicas": 1}, name
        assert scales[-1] == {"matchTrafficWeight": True}, name  # weights size the canary again


def test_analysis_runs_from_the_first_weight_with_every_argument(canaried: list[Manifest]) -> None:
    templates = {t["metadata"]["name"]: t for t in of_kind(canaried, "AnalysisTemplate")}
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        analysis = canary(rollout)["analysis"]
        first_weight = next(i for i, s in enumerate(steps(rollout)) if "setWeight" in s)
        assert analysis["startingStep"] == first_weight, name
        passed = {a["name"]: a for a in analysis["args"]}
        for ref in analysis["templates"]:
            template = templates[ref["templateName"]]["spec"]
            declared = {a["name"] for a in template["args"]}
            required = {a["name"] for a in template["args"] if "value" not in a}
            assert required <= passed.keys() <= declared, name
            used = {arg for m in template["metrics"] for arg in _ARG.findall(str(m))}
            assert used <= declared, name
        assert passed["canary-hash"]["valueFrom"] == {"podTemplateHashValue": "Latest"}
        assert passed["namespace"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        if "app" in passed:
            assert passed["app"]["value"] == name


def test_analysis_judges_success_rate_and_p99(canaried: list[Manifest]) -> None:
    for template in of_kind(canaried, "AnalysisTemplate"):
        metrics = {m["name"]: m for m in template["spec"]["metrics"]}
        assert metrics.keys() == {"success-rate", "p99-latency"}
        for metric in metrics.values():
            assert metric["failureLimit"] >= 1
            assert metric["interval"]
            assert "count" not in metric  # background: until the Rollout finishes
            prometheus = metric["provider"]["prometheus"]
            assert prometheus["address"] == "http://kps-prometheus.observability.svc:9090"
        assert ">= 0.99" in metrics["success-rate"]["successCondition"]
        assert (
            "histogram_quantile(0.99," in metrics["p99-latency"]["provider"]["prometheus"]["query"]
        )
        assert re.search(r"result\[0\] < \S+$", metrics["p99-latency"]["successCondition"])
        for metric in metrics.values():
            query = metric["provider"]["prometheus"]["query"]
            # The canary's pods only, in the Rollout's namespace.
            assert 'namespace="{{args.namespace}}"' in query
            assert re.search(r'pod=~"[^"]*\{\{args\.canary-hash\}\}-\.\*"', query)


def _selectors(query: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: matcher text}) for every ``name{...}`` selector in a query."""
    found = []
    for name, body in re.findall(r"(portico_[a-z_]+)\{([^}]*)\}", _ARG.sub("ARG", query)):
        labels = dict(re.findall(r'([a-z_]+)\s*[!=]~?\s*"([^"]*)"', body))
        found.append((name, labels))
    return found


def test_analysis_queries_name_registered_metrics(
    canaried: list[Manifest], semconv: dict[str, Any]
) -> None:
    """Every metric is in observability/semconv.yaml, emitted by the app the template judges,
    and filtered only by its registered labels plus the scrape's namespace and pod."""
    scrape = (ROOT / "observability" / "prometheus" / "prometheus.yaml").read_text()
    assert "target_label: namespace" in scrape
    assert "target_label: pod" in scrape
    emitted = {"http-canary-health": {"gateway"}, "grpc-canary-health": {"users", "auth", "audit"}}
    for template in of_kind(canaried, "AnalysisTemplate"):
        name = template["metadata"]["name"]
        for metric in template["spec"]["metrics"]:
            selectors = _selectors(metric["provider"]["prometheus"]["query"])
            assert selectors, metric["name"]
            assert all({"namespace", "pod"} <= labels.keys() for _, labels in selectors)
            for series, labels in selectors:
                base = re.sub(r"_(bucket|count|sum)$", "", series)
                assert base in semconv, series
                registered = semconv[base]
                assert registered["kind"] == "histogram"
                assert emitted[name] <= set(registered["emitted_by"]), series
                allowed = {*registered["labels"], "namespace", "pod"}
                allowed |= {"le"} if series.endswith("_bucket") else set()
                assert set(labels) <= allowed, (series, labels)
                if "code" in labels:
                    assert set(labels["code"].split("|")) == GRPC_FAILURES


def test_rollout_destination_rules_repeat_the_apps_policy(canaried: list[Manifest]) -> None:
    rules = {
        r["spec"]["host"]: r["spec"]["trafficPolicy"] for r in of_kind(canaried, "DestinationRule")
    }
    for rollout in of_kind(canaried, "Rollout"):
        name = rollout["metadata"]["name"]
        for role in ("stableService", "canaryService"):
            assert rules[canary(rollout)[role]] == rules[name], (name, role)
