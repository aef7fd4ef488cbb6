"""Valkey high availability (k8s/components/valkey-ha, docs/valkey-ha.md) as rendered.

staging and prod run three Valkey pods with a Sentinel each; dev stays one. Both sides must
agree: each client's ``valkey+sentinel://`` URL (parsed by the code that will read it,
:mod:`portico_common.valkey`) names the Sentinels by the pods' DNS names through the headless
Service and its Sentinel port, and the primary name the Sentinels monitor.
"""

from __future__ import annotations

import re

import pytest

from portico_common.valkey import is_sentinel_url, parse_sentinel_url
from portico_devstack import valkey_acl
from tests.k8s.conftest import Manifest, of_kind, one, pod_template
from tests.k8s.test_wiring import container_env

HA = ("staging", "prod")


def _url_variable(component: str) -> str:
    return "GATEWAY_VALKEY_URL" if component == "gateway" else f"{component.upper()}_VALKEY__URL"


def test_dev_keeps_one_valkey_and_plain_urls(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["dev"]
    assert one(docs, "StatefulSet", "valkey")["spec"]["replicas"] == 1
    for component in valkey_acl.COMPONENTS:
        env, _ = container_env(docs, one(docs, "Deployment", component))
        assert not is_sentinel_url(env[_url_variable(component)]), component


@pytest.fixture(params=HA)
def ha_docs(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    """One HA overlay's documents."""
    result: list[Manifest] = rendered[request.param]
    return result


def test_three_pods_spread_over_nodes_with_a_budget(ha_docs: list[Manifest]) -> None:
    docs = ha_docs
    statefulset = one(docs, "StatefulSet", "valkey")
    assert statefulset["spec"]["replicas"] == 3
    template = pod_template(statefulset)
    (required,) = template["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["topologyKey"] == "kubernetes.io/hostname"
    assert required["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "valkey"}
    (spread,) = template["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == (
        "topology.kubernetes.io/zone",
        "ScheduleAnyway",
    )
    assert {c["name"] for c in template["containers"]} >= {"valkey", "sentinel"}
    budget = one(docs, "PodDisruptionBudget", "valkey")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "valkey"}
    # The cache instance is not made HA by accident (it shares the base).
    assert one(docs, "StatefulSet", "valkey-cache")["spec"]["replicas"] == 1
    script = template["initContainers"][0]["command"][-1]
    assert "min-replicas-to-write 1" in script
    assert re.search(r"sentinel monitor portico \S+ 6379 2\b", script), "quorum 2"


def test_clients_name_the_sentinels_the_manifests_run(ha_docs: list[Manifest]) -> None:
    docs = ha_docs
    statefulset = one(docs, "StatefulSet", "valkey")
    headless = one(docs, "Service", "valkey-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {"app.kubernetes.io/name": "valkey"}
    sentinel_port = next(
        p["port"] for p in headless["spec"]["ports"] if p["name"] == "tcp-sentinel"
    )
    expected = {
        (f"valkey-{n}.valkey-headless", sentinel_port)
        for n in range(statefulset["spec"]["replicas"])
    }
    script = pod_template(statefulset)["initContainers"][0]["command"][-1]
    monitored = re.search(r"sentinel monitor (\S+) ", script)
    assert monitored is not None
    for component in valkey_acl.COMPONENTS:
        env, _ = container_env(docs, one(docs, "Deployment", component))
        names = list(env)
        url = env[_url_variable(component)]
        target = parse_sentinel_url(url)
        assert set(target.sentinels) == expected, (component, url)
        assert target.primary == monitored.group(1), component
        assert target.username == component
        assert target.password == f"secret-valkey-{component}"
        # $(VAR) expands only variables defined before it in the list.
        if component in ("users", "auth"):  # the relays wait for a replica
            assert env[f"{component.upper()}_OUTBOX__REPLICA_ACKS"] == "1", component
        for variable in ("VALKEY_PASSWORD", "VALKEY_SENTINEL_PASSWORD"):
            assert names.index(variable) < names.index(_url_variable(component)), component
    secret = one(docs, "ExternalSecret", "valkey")
    assert "sentinel" in {d["secretKey"] for d in secret["spec"]["data"]}
    assert len(of_kind(docs, "PodDisruptionBudget")) >= 1
