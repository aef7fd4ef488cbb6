"""The whole GitOps tree as one platform: every address, scrape and metric it names exists.

What Argo CD installs is modelled from ``argocd/``: every Application the root app syncs and every
environment the ApplicationSet makes. A Git source is rendered with ``kubectl kustomize`` (its
Services, and the Services its operators' CRs create: CloudNativePG, ECK); a Helm chart cannot be
rendered offline (no chart archives here), so :data:`CHARTS` states, per pinned chart version, the
Services, ports and pod labels its templates create from the values the Application passes
(``fullnameOverride`` and friends; each entry names the template it was read from). A chart
version missing from that table fails the test: a chart bump means re-reading its templates.

Then, over everything rendered (overlays, the observability configuration, the Applications' own
Helm values):

* every in-cluster DNS name ``<service>.<namespace>.svc[.cluster.local][:port]`` resolves to a
  Service of the platform, on a port it serves;
* every NetworkPolicy lets the real scraper (the Prometheus pods the chart runs, in their
  namespace) reach every metrics port a ServiceMonitor/PodMonitor scrapes, and the apps reach the
  real collector;
* every metric a rule, a dashboard, a Grafana data source or a canary analysis selects is produced
  by a scrape that exists (a PodMonitor/ServiceMonitor that selects real pods on a real port), the
  ``job`` values they filter on are the ones the monitors set, and no scrape adds a target label
  that would rename one of the metric's own labels (a ``service`` target label turns the gRPC
  metrics' ``service`` into ``exported_service``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import Manifest, of_kind
from tests.k8s.test_argocd import generated_applications, kustomize
from tests.k8s.test_wiring import allows
from tests.observability import catalog

#: The one namespace of the observability platform (issue: every reference uses it).
PLATFORM = "observability"
#: Environments the platform's Prometheus watches (dev runs without the Prometheus Operator).
MONITORED = ("staging", "prod")
#: Environments with NetworkPolicies (default deny).
POLICED = ("staging", "prod")
APPS = ("gateway", "users", "auth", "audit")
#: Labels every Prometheus Operator scrape adds to its targets (besides relabelings).
POD_MONITOR_TARGET_LABELS = {"job", "namespace", "pod", "container", "endpoint", "instance"}
SERVICE_MONITOR_TARGET_LABELS = POD_MONITOR_TARGET_LABELS | {"service"}
_DNS = re.compile(
    r"(?<![\w.-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    r"\.svc(?:\.cluster\.local)?(?::(\d+))?"
)
_ARG = re.compile(r"\{\{\s*args\.[\w-]+\s*\}\}")
#: Addresses that are not Services of the platform.
NOT_SERVICES = {("kubernetes", "default")}  # the API server (Argo CD's destination)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    ports: dict[str, int]  # port name -> number
    labels: dict[str, str] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pods:
    """The pods of one workload: their labels and named container ports."""

    role: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)


@dataclass
class Platform:
    services: list[Service] = field(default_factory=list)
    pods: list[Pods] = field(default_factory=list)
    objects: list[Manifest] = field(default_factory=list)
    sources: dict[str, list[Manifest]] = field(default_factory=dict)  # Git path -> rendered
    charts: dict[str, Manifest] = field(default_factory=dict)  # Application name -> values

    def service(self, name: str, namespace: str) -> Service | None:
        return next((s for s in self.services if (s.name, s.namespace) == (name, namespace)), None)

    def of_role(self, role: str) -> list[Pods]:
        return [p for p in self.pods if p.role == role]


# ---------------------------------------------------------------- charts (read from templates)


def _fullname(values: Manifest, release: str, chart: str, limit: int = 63) -> str:
    """The common Helm ``<chart>.fullname`` helper."""
    if values.get("fullnameOverride"):
        return str(values["fullnameOverride"])[:limit].rstrip("-")
    name = values.get("nameOverride") or chart
    return (release if name in release else f"{release}-{name}")[:limit].rstrip("-")


def kube_prometheus_stack(values: Manifest, release: str, ns: str) -> Platform:
    """kube-prometheus-stack 88.5.3: templates/prometheus/service.yaml and
    alertmanager/service.yaml (``<fullname>-prometheus``, ``-alertmanager``; fullname truncated to
    26), the operator's governing Services ``prometheus-operated``/``alertmanager-operated``, the
    grafana subchart (``grafana.fullname``, port 80). Prometheus pods carry
    ``app.kubernetes.io/name: prometheus`` and ``operator.prometheus.io/name: <CR name>``."""
    full = _fullname(values, release, "kube-prometheus-stack", 26)
    prom = values.get("prometheus", {})
    am = values.get("alertmanager", {})
    prom_port = int(prom.get("service", {}).get("port", 9090))
    am_port = int(am.get("service", {}).get("port", 9093))
    grafana = values.get("grafana", {})
    grafana_name = _fullname(grafana, release, "grafana")
    return Platform(
        services=[
            Service(f"{full}-prometheus", ns, {"http-web": prom_port, "reloader-web": 8080}),
            Service("prometheus-operated", ns, {"web": 9090}),
            Service(f"{full}-alertmanager", ns, {"http-web": am_port, "reloader-web": 8080}),
            Service("alertmanager-operated", ns, {"web": 9093}),
            Service(
                grafana_name, ns, {"http-web": int(grafana.get("service", {}).get("port", 80))}
            ),
        ],
        pods=[
            Pods(
                "prometheus",
                ns,
                {
                    "app.kubernetes.io/name": "prometheus",
                    "operator.prometheus.io/name": f"{full}-prometheus",
                },
            ),
            Pods("grafana", ns, {"app.kubernetes.io/name": "grafana"}),
        ],
    )


#: opentelemetry-collector 0.170.0 values.yaml `ports` (enabled by default, servicePort).
_OTEL_PORTS = {
    "otlp": (True, 4317),
    "otlp-http": (True, 4318),
    "jaeger-compact": (True, 6831),
    "jaeger-thrift": (True, 14268),
    "jaeger-grpc": (True, 14250),
    "zipkin": (True, 9411),
    "metrics": (False, 8888),
}


def opentelemetry_collector(values: Manifest, release: str, ns: str) -> Platform:
    """opentelemetry-collector 0.170.0: templates/service.yaml (name ``fullname``, one port per
    enabled ``ports`` entry, named by its key; _config.tpl servicePortsConfig), pod labels
    ``app.kubernetes.io/name: <nameOverride or chart>``, ``instance: <release>``, and
    ``component: standalone-collector`` in deployment mode (_helpers.tpl)."""
    assert values.get("mode") in ("deployment", "statefulset"), (
        "a Service needs a non-daemonset mode"
    )
    ports = {k: {"enabled": on, "servicePort": p} for k, (on, p) in _OTEL_PORTS.items()}
    for key, port in values.get("ports", {}).items():
        ports[key] = {**ports.get(key, {}), **port}
    served = {k: int(p["servicePort"]) for k, p in ports.items() if p.get("enabled")}
    name = values.get("nameOverride") or "opentelemetry-collector"
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/component": "standalone-collector",
    }
    full = _fullname(values, release, "opentelemetry-collector")
    container = {
        k: int(p.get("containerPort", p["servicePort"]))
        for k, p in ports.items()
        if p.get("enabled")
    }
    return Platform(
        services=[Service(full, ns, served, labels=labels, selector=labels)],
        pods=[Pods("otel-collector", ns, labels, container)],
    )


def jaeger(values: Manifest, release: str, ns: str) -> Platform:
    """jaeger 4.11.1 (Jaeger v2, all in one): templates/jaeger/jaeger-service.yaml, one Service
    ``fullname`` with OTLP (4317/4318), the query UI/API (16686/16685) and metrics (8888/8889)."""
    full = _fullname(values, release, "jaeger")
    ports = {
        "otlp-grpc": 4317,
        "otlp-http": 4318,
        "http-query": 16686,
        "grpc-query": 16685,
        "http-zipkin": 9411,
        "internal-metrics": 8888,
        "span-metrics": 8889,
    }
    labels = {"app.kubernetes.io/name": values.get("nameOverride") or "jaeger"}
    return Platform(
        services=[Service(full, ns, ports, labels=labels)],
        pods=[Pods("jaeger", ns, {**labels, "app.kubernetes.io/component": "all-in-one"})],
    )


def fluent_bit(values: Manifest, release: str, ns: str) -> Platform:
    """fluent-bit 0.58.1: templates/service.yaml (``fullname``, ``service.port`` 2020)."""
    full = _fullname(values, release, "fluent-bit")
    labels = {"app.kubernetes.io/name": values.get("nameOverride") or "fluent-bit"}
    port = int(values.get("service", {}).get("port", 2020))
    return Platform(
        services=[Service(full, ns, {"http": port}, labels=labels)],
        pods=[Pods("fluent-bit", ns, labels)],
    )


def nothing_addressed(values: Manifest, release: str, ns: str) -> Platform:
    """Operators whose Services nothing in this repository addresses (webhooks, their metrics)."""
    return Platform()


#: (chart, version) -> what it creates. Every chart an Application installs must be listed.
CHARTS: dict[tuple[str, str], Callable[[Manifest, str, str], Platform]] = {
    ("kube-prometheus-stack", "88.5.3"): kube_prometheus_stack,
    ("opentelemetry-collector", "0.170.0"): opentelemetry_collector,
    ("jaeger", "4.11.1"): jaeger,
    ("fluent-bit", "0.58.1"): fluent_bit,
    ("prometheus-operator-crds", "31.0.1"): nothing_addressed,
    ("eck-operator", "2.16.0"): nothing_addressed,
    ("base", "1.29.2"): nothing_addressed,
    ("istiod", "1.29.2"): nothing_addressed,
    ("cert-manager", "v1.18.2"): nothing_addressed,
    ("external-secrets", "0.20.4"): nothing_addressed,
    ("cloudnative-pg", "0.26.1"): nothing_addressed,
    ("argo-rollouts", "2.40.9"): nothing_addressed,
    ("argo-cd", "10.1.1"): nothing_addressed,
    ("cni", "1.29.2"): nothing_addressed,
}


# ---------------------------------------------------------------- Git sources and their operators


def _pod_ports(template: Manifest) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in template["spec"].get("containers", [])
        for p in c.get("ports", [])
        if "name" in p
    }


def from_objects(docs: list[Manifest], ns: str) -> Platform:
    """The Services and pods that rendered objects make, operators' CRs included."""
    platform = Platform(objects=docs)
    for doc in docs:
        meta, kind = doc["metadata"], doc["kind"]
        where = meta.get("namespace", ns)
        name = meta["name"]
        if kind == "Service":
            ports = {p.get("name", str(p["port"])): p["port"] for p in doc["spec"].get("ports", [])}
            platform.services.append(
                Service(name, where, ports, meta.get("labels", {}), doc["spec"].get("selector", {}))
            )
        elif (
            kind in ("Deployment", "StatefulSet", "DaemonSet", "Rollout")
            and "template" in doc["spec"]
        ):
            template = doc["spec"]["template"]
            platform.pods.append(
                Pods(name, where, template["metadata"]["labels"], _pod_ports(template))
            )
        elif kind == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            # CloudNativePG: <name>-rw/-ro/-r on 5432; instance pods export metrics on 9187.
            for suffix in ("rw", "ro", "r"):
                platform.services.append(Service(f"{name}-{suffix}", where, {"postgres": 5432}))
            labels = {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}
            platform.pods.append(
                Pods("postgres", where, labels, {"postgresql": 5432, "metrics": 9187})
            )
        elif kind == "Pooler" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            platform.services.append(Service(name, where, {"pgbouncer": 5432}))
            labels = {"cnpg.io/poolerName": name, "cnpg.io/cluster": doc["spec"]["cluster"]["name"]}
            platform.pods.append(
                Pods("pooler", where, labels, {"pgbouncer": 5432, "metrics": 9127})
            )
        elif kind == "Elasticsearch" and doc["apiVersion"].startswith(
            "elasticsearch.k8s.elastic.co/"
        ):
            # ECK: <name>-es-http (9200), <name>-es-transport (9300).
            platform.services.append(Service(f"{name}-es-http", where, {"https": 9200}))
            platform.services.append(
                Service(f"{name}-es-transport", where, {"tls-transport": 9300})
            )
            platform.pods.append(
                Pods("elasticsearch", where, {"elasticsearch.k8s.elastic.co/cluster-name": name})
            )
        elif kind == "Kibana" and doc["apiVersion"].startswith("kibana.k8s.elastic.co/"):
            platform.services.append(Service(f"{name}-kb-http", where, {"https": 5601}))
    return platform


def _merge(into: Platform, other: Platform) -> None:
    into.services += other.services
    into.pods += other.pods
    into.objects += other.objects


@functools.cache
def argocd_objects() -> tuple[Manifest, ...]:
    return tuple(kustomize("argocd"))


def applications() -> list[Manifest]:
    """Every Application Argo CD runs: the root app's and the ApplicationSet's."""
    docs = list(argocd_objects())
    apps = of_kind(docs, "Application")
    for appset in of_kind(docs, "ApplicationSet"):
        apps += generated_applications(appset).values()
    return apps


@functools.cache
def platform() -> Platform:
    result = Platform()
    for app in applications():
        source, ns = app["spec"]["source"], app["spec"]["destination"]["namespace"]
        name = app["metadata"]["name"]
        if "chart" in source:
            key = (source["chart"], source["targetRevision"])
            assert key in CHARTS, f"{name}: chart {key} is not in CHARTS (read its templates)"
            helm = source.get("helm", {})
            values = helm.get("valuesObject", {})
            result.charts[name] = values
            _merge(result, CHARTS[key](values, helm.get("releaseName", name), ns))
        elif source["path"] != "argocd":
            docs = kustomize(source["path"])
            result.sources[source["path"]] = docs
            _merge(result, from_objects(docs, ns))
    return result


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    where: str
    service: str
    namespace: str
    port: int | None


def _strings(node: Any, where: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, text, the mapping holding it) for every string in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield f"{where}.{key}", value, node
            else:
                yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, str):
                yield f"{where}[{index}]", value, {}
            else:
                yield from _strings(value, f"{where}[{index}]")


def _sibling_port(holder: dict[str, Any], text: str) -> int | None:
    """``host: x.ns.svc`` + ``port: 9200`` (Fluent Bit, Istio's providers): the port beside it."""
    for key, value in holder.items():
        if value == text:
            for candidate in (key.replace("host", "port"), key.replace("service", "port"), "port"):
                if candidate != key and str(holder.get(candidate, "")).isdigit():
                    return int(holder[candidate])
    return None


def _embedded(text: str) -> list[Any]:
    """A config file inside a string (ConfigMap data, Helm values), parsed; else nothing."""
    if "\n" not in text:
        return []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:  # NDJSON, scripts: scanned as text
        return []
    return [d for d in docs if isinstance(d, dict | list)]


def references(docs: list[Manifest], label: str) -> Iterator[Reference]:
    for doc in docs:
        yield from _references_in(doc, f"{label}: {doc['kind']}/{doc['metadata']['name']}")


def _references_in(node: Any, where: str) -> Iterator[Reference]:
    for path, text, holder in _strings(node, where):
        if path.endswith(".destination.server"):
            continue
        structured = _embedded(text)
        for index, inner in enumerate(structured):
            yield from _references_in(inner, f"{path}#{index}")
        if structured:
            continue
        for match in _DNS.finditer(text):
            service, namespace, port = match.groups()
            number = int(port) if port else _sibling_port(holder, text)
            scheme = text[max(0, match.start() - 8) : match.start()]
            if number is None and scheme.endswith(("http://", "https://")):
                number = 443 if scheme.endswith("https://") else 80
            yield Reference(path, service, namespace, number)


def all_references() -> list[Reference]:
    """In every Git source an Application syncs, and in the Applications themselves."""
    found: list[Reference] = []
    for path, docs in platform().sources.items():
        found += references(docs, path)
    found += references(list(argocd_objects()), "argocd")
    return found


def platform_objects() -> list[Manifest]:
    """The Git sources outside the environments (the observability configuration)."""
    return [
        doc
        for path, docs in platform().sources.items()
        if not path.startswith("k8s/overlays/")
        for doc in docs
    ]


def test_every_in_cluster_address_resolves_to_a_platform_service() -> None:
    problems = []
    for ref in all_references():
        if (ref.service, ref.namespace) in NOT_SERVICES:
            continue
        service = platform().service(ref.service, ref.namespace)
        address = f"{ref.service}.{ref.namespace}.svc:{ref.port}"
        if service is None:
            problems.append(f"{ref.where}: {address} - no such Service in the platform")
        elif ref.port is None and ".dnsNames[" not in ref.where:  # a certificate's name
            problems.append(f"{ref.where}: {address} - no port given")
        elif ref.port is not None and ref.port not in service.ports.values():
            problems.append(
                f"{ref.where}: {address} - {ref.service} serves {sorted(service.ports.values())}"
            )
    assert not problems, "\n".join(sorted(set(problems)))


def test_the_address_check_is_not_vacuous() -> None:
    found = {(r.service, r.namespace) for r in all_references()}
    # The apps' OTLP endpoint, the canary analysis and the Grafana data sources are all seen.
    assert any(ns == PLATFORM and "collector" in s for s, ns in found), found
    assert any(ns == PLATFORM and "prometheus" in s for s, ns in found), found
    assert platform().service("no-such-service", PLATFORM) is None


def test_the_observability_platform_lives_in_one_namespace() -> None:
    roles = {p.role: p.namespace for p in platform().pods}
    for role in (
        "prometheus",
        "otel-collector",
        "jaeger",
        "grafana",
        "fluent-bit",
        "elasticsearch",
    ):
        assert roles.get(role) == PLATFORM, f"{role}: {roles.get(role, 'not installed')}"


# ---------------------------------------------------------------- scrapes


@dataclass(frozen=True)
class Scrape:
    """One endpoint of a ServiceMonitor/PodMonitor, resolved to the pods and port it hits."""

    monitor: Manifest
    pods: Pods
    port: int
    job: str
    target_labels: frozenset[str]


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    from tests.k8s.test_wiring import _selects as selects

    return selects(selector, labels)


def _namespaces(monitor: Manifest, own: str) -> Callable[[str], bool]:
    chooser = monitor["spec"].get("namespaceSelector", {})
    if chooser.get("any"):
        return lambda _: True
    if chooser.get("matchNames"):
        return lambda ns: ns in chooser["matchNames"]
    return lambda ns: ns == own


def _relabel_targets(endpoint: Manifest) -> set[str]:
    return {r["targetLabel"] for r in endpoint.get("relabelings", []) if "targetLabel" in r}


def _job(monitor: Manifest, endpoint: Manifest, default: str, labels: dict[str, str]) -> str:
    for relabel in endpoint.get("relabelings", []):
        if relabel.get("targetLabel") == "job" and not relabel.get("sourceLabels"):
            return str(relabel["replacement"])
    if monitor["spec"].get("jobLabel"):
        return labels.get(monitor["spec"]["jobLabel"], default)
    return default


def scrapes(docs: list[Manifest], ns: str, world: Platform) -> list[Scrape]:
    """Every target the monitors in ``docs`` (namespace ``ns``) make, over ``world``."""
    found: list[Scrape] = []
    for monitor in of_kind(docs, "PodMonitor"):
        in_ns = _namespaces(monitor, monitor["metadata"].get("namespace", ns))
        for pods in world.pods:
            if not in_ns(pods.namespace) or not _selects(monitor["spec"]["selector"], pods.labels):
                continue
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                port = pods.ports.get(endpoint.get("port", ""))
                name = monitor["metadata"]["name"]
                assert port is not None, f"{name}: {pods.role} has no {endpoint.get('port')}"
                default = f"{pods.namespace}/{monitor['metadata']['name']}"
                targets = frozenset(POD_MONITOR_TARGET_LABELS | _relabel_targets(endpoint))
                found.append(
                    Scrape(
                        monitor, pods, port, _job(monitor, endpoint, default, pods.labels), targets
                    )
                )
    for monitor in of_kind(docs, "ServiceMonitor"):
        in_ns = _namespaces(monitor, monitor["metadata"].get("namespace", ns))
        for service in world.services:
            if not in_ns(service.namespace) or not _selects(
                monitor["spec"]["selector"], service.labels
            ):
                continue
            for endpoint in monitor["spec"]["endpoints"]:
                port = service.ports.get(endpoint.get("port", ""))
                name = monitor["metadata"]["name"]
                assert port is not None, f"{name}: {service.name} has no {endpoint.get('port')}"
                selector = {"matchLabels": service.selector}
                backends = [
                    p
                    for p in world.pods
                    if p.namespace == service.namespace
                    and service.selector
                    and _selects(selector, p.labels)
                ]
                targets = frozenset(SERVICE_MONITOR_TARGET_LABELS | _relabel_targets(endpoint))
                for pods in backends or [Pods(service.name, service.namespace, service.selector)]:
                    found.append(
                        Scrape(
                            monitor,
                            pods,
                            port,
                            _job(monitor, endpoint, service.name, service.labels),
                            targets,
                        )
                    )
    return found


def all_scrapes(rendered: dict[str, list[Manifest]]) -> dict[str, list[Scrape]]:
    """Scrapes by environment (and the platform's own, under ``observability``)."""
    result = {env: scrapes(rendered[env], f"portico-{env}", platform()) for env in MONITORED}
    result[PLATFORM] = scrapes(platform_objects(), PLATFORM, platform())
    return result


def test_the_platform_prometheus_selects_every_monitor_and_rule() -> None:
    (values,) = [v for n, v in platform().charts.items() if "prometheus" in v]
    spec = values["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec.get(f"{kind}SelectorNilUsesHelmValues") is False, kind
        assert not spec.get(f"{kind}Selector"), kind
        assert not spec.get(f"{kind}NamespaceSelector"), kind


@pytest.mark.parametrize("env", MONITORED)
def test_every_app_pod_is_scraped_once_with_the_labels_the_queries_use(
    env: str, rendered: dict[str, list[Manifest]]
) -> None:
    env_scrapes = all_scrapes(rendered)[env]
    semconv = catalog.load_yaml(catalog.SEMCONV)["metrics"]
    for app in APPS:
        mine = [s for s in env_scrapes if s.pods.labels.get("app.kubernetes.io/name") == app]
        assert mine, f"{env}: nothing scrapes {app}"
        assert len(mine) == 1, f"{env}: {app} is scraped {len(mine)} times (one per Service?)"
        (scrape,) = mine
        assert scrape.job == app, f"{env}: {app} is scraped as job {scrape.job!r}"
        assert {"namespace", "pod"} <= scrape.target_labels
        own = {label for m in semconv if app in m["emitted_by"] for label in m["labels"]}
        clash = own & scrape.target_labels
        assert not clash, f"{env}: the scrape of {app} renames its metrics' {clash} to exported_*"


def _referenced_jobs(queries: list[str]) -> set[str]:
    jobs: set[str] = set()
    for query in queries:
        for matcher in catalog.matchers(query):
            if (
                matcher.label == "job"
                and matcher.op in ("=", "=~")
                and "placeholder" not in matcher.value
            ):
                jobs |= set(matcher.value.split("|"))
    return jobs


def analysis_queries(rendered: dict[str, list[Manifest]]) -> list[str]:
    return [
        _ARG.sub("placeholder", m["provider"]["prometheus"]["query"])
        for env in MONITORED
        for t in of_kind(rendered[env], "AnalysisTemplate")
        for m in t["spec"]["metrics"]
        if "prometheus" in m["provider"]
    ]


def test_every_selected_metric_and_job_comes_from_a_scrape_that_exists(
    rendered: dict[str, list[Manifest]],
) -> None:
    by_env = all_scrapes(rendered)
    platform_scrapes = by_env[PLATFORM]
    queries = [q.promql for q in catalog.all_queries()] + analysis_queries(rendered)
    semconv = {m["name"]: m for m in catalog.load_yaml(catalog.SEMCONV)["metrics"]}
    samples = catalog.portico_sample_names()
    problems = []
    for env in MONITORED:
        jobs = {s.job for s in [*by_env[env], *platform_scrapes]}
        roles = {s.pods.role for s in [*by_env[env], *platform_scrapes]}
        apps = {s.pods.labels.get("app.kubernetes.io/name") for s in by_env[env]}
        for query in queries:
            for name in catalog.metric_names(query):
                if name in catalog.recorded_names() or name in ("up", "ALERTS"):
                    continue
                if name in samples:
                    missing = set(semconv[samples[name]]["emitted_by"]) - apps
                    if missing:
                        problems.append(f"{env}: {name} comes from {sorted(missing)}, not scraped")
                elif name.startswith("process_"):
                    if not apps & set(APPS):
                        problems.append(f"{env}: {name}: no app is scraped")
                elif name.startswith("cnpg_"):
                    if "postgres" not in roles:
                        problems.append(f"{env}: {name}: no scrape of the PostgreSQL instances")
                elif name.startswith("redis_"):
                    if "valkey" not in roles:
                        problems.append(f"{env}: {name}: no scrape of Valkey's exporter")
                elif name.startswith("traces_span_metrics_"):
                    if not any(
                        s.pods.role == "otel-collector" and s.port == 8889 for s in platform_scrapes
                    ):
                        problems.append(f"{name}: no scrape of the collector's span metrics (8889)")
                else:
                    problems.append(f"{name}: nothing is known to produce it")
        for job in sorted(_referenced_jobs(queries) - jobs):
            problems.append(f"{env}: job={job!r} is selected but no scrape sets it")
    assert not problems, "\n".join(sorted(set(problems)))


# ---------------------------------------------------------------- network policies


@pytest.mark.parametrize("env", POLICED)
def test_network_policies_let_the_real_scraper_and_collector_in(
    env: str, rendered: dict[str, list[Manifest]]
) -> None:
    docs = rendered[env]
    prometheus = platform().of_role("prometheus")
    assert prometheus, "the platform runs no Prometheus"
    collectors = platform().of_role("otel-collector")
    assert collectors, "the platform runs no OpenTelemetry Collector"
    own = [s for s in all_scrapes(rendered)[env] if s.pods.namespace == f"portico-{env}"]
    assert own, f"{env}: no scrapes"
    for scrape in own:
        name = next((k for k, v in scrape.pods.ports.items() if v == scrape.port), "")
        for server in prometheus:
            assert allows(
                docs,
                "Ingress",
                scrape.pods.labels,
                server.labels,
                (scrape.port, name),
                peer_namespace=server.namespace,
            ), f"{env}: {server.namespace} Prometheus -> {scrape.pods.role}:{scrape.port}"
    world = from_objects(docs, f"portico-{env}")
    for app in APPS:
        (pods,) = [
            p for p in world.pods if p.labels.get("app.kubernetes.io/name") == app and p.role == app
        ]
        for collector in collectors:
            port = collector.ports["otlp"]
            assert allows(
                docs, "Egress", pods.labels, collector.labels, (port, "otlp"),
                peer_namespace=collector.namespace,
            ), f"{env}: {app} -> collector {collector.namespace}:{port}"  # fmt: skip


def test_istio_sends_spans_to_a_provider_istiod_defines(
    rendered: dict[str, list[Manifest]],
) -> None:
    """Telemetry names a mesh extension provider; istiod's meshConfig must define it (and its
    address resolves: the address test scans the Application's values)."""
    (istiod,) = [v for n, v in platform().charts.items() if n == "istiod"]
    providers = {p["name"] for p in istiod.get("meshConfig", {}).get("extensionProviders", [])}
    for env, docs in rendered.items():
        for telemetry in of_kind(docs, "Telemetry"):
            for tracing in telemetry["spec"].get("tracing", []):
                for provider in tracing.get("providers", []):
                    assert provider["name"] in providers, f"{env}: provider {provider['name']!r}"


def test_the_scrape_checks_catch_a_service_monitor_over_the_rollout_services() -> None:
    """Not vacuous: a ServiceMonitor on the gateway's Services would scrape each pod once per
    Service (gateway, gateway-stable, gateway-canary), and its ``service`` target label is one
    the gRPC metrics already have."""
    monitor: Manifest = {
        "kind": "ServiceMonitor",
        "metadata": {"name": "gateway-by-service", "namespace": "portico-staging"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
            "endpoints": [{"port": "http"}],
        },
    }
    found = scrapes([monitor], "portico-staging", platform())
    assert len(found) == 3, [s.job for s in found]
    assert all("service" in s.target_labels for s in found)
    grpc = catalog.semconv_metrics()
    assert "portico_grpc_server_duration_seconds" in grpc
    (server,) = [
        m
        for m in catalog.load_yaml(catalog.SEMCONV)["metrics"]
        if m["name"] == "portico_grpc_server_duration_seconds"
    ]
    assert "service" in server["labels"]
