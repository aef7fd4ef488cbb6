"""Valkey high availability (k8s/components/valkey-ha, docs/valkey-ha.md) as rendered.

staging and prod run three Valkey pods with a Sentinel each; dev stays one. Both sides must
agree: each client's ``valkey+sentinel://`` URL (parsed by the code that will read it,
:mod:`portico_common.valkey`) names the Sentinels by the pods' DNS names through the headless
Service and its Sentinel port, and the primary name the Sentinels monitor; the NetworkPolicies
open exactly the ports the URLs, the Sentinels' configuration and replication use; the mesh
leaves them plain TCP; replication and Sentinel log in as ACL users of their own
(:data:`portico_devstack.valkey_acl.HA_RULES`, the rules the failover drill runs with).
"""

from __future__ import annotations

import re

import pytest

from portico_common.valkey import is_sentinel_url, parse_sentinel_url
from portico_devstack import valkey_acl
from tests.k8s.conftest import Manifest, of_kind, one, pod_template
from tests.k8s.test_data_stores import env_secret, valkey_users
from tests.k8s.test_wiring import allows, backend, container_env

HA = ("staging", "prod")


def _url_variable(component: str) -> str:
    return "GATEWAY_VALKEY_URL" if component == "gateway" else f"{component.upper()}_VALKEY__URL"


def test_dev_keeps_one_valkey_and_plain_urls(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["dev"]
    assert one(docs, "StatefulSet", "valkey")["spec"]["replicas"] == 1
    assert not set(valkey_acl.HA_RULES) & set(valkey_users(docs))
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
        for variable in ("VALKEY_PASSWORD", "VALKEY_SENTINEL_PASSWORD", "VALKEY_SENTINELS"):
            assert names.index(variable) < names.index(_url_variable(component)), component
    assert len(of_kind(docs, "PodDisruptionBudget")) >= 1


def _script(docs: list[Manifest]) -> str:
    """The init container's script: it writes ha.conf and sentinel.conf."""
    command: list[str] = pod_template(one(docs, "StatefulSet", "valkey"))["initContainers"][0][
        "command"
    ]
    return command[-1]


def _port(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, pattern
    return int(found.group(1))


def _labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_policies_open_what_the_urls_and_the_sentinels_use(ha_docs: list[Manifest]) -> None:
    """Each client reaches every Sentinel its URL names and the primary the Sentinels hand out
    (a pod's announced name, on the port ``sentinel monitor`` names); the pods reach each other
    on the ports replication, the Sentinels and the init container use. Nothing more: another
    port or another client stays closed."""
    docs = ha_docs
    statefulset = one(docs, "StatefulSet", "valkey")
    valkey = _labels(statefulset)
    script = _script(docs)
    monitored = _port(r"sentinel monitor portico \S+ (\d+) ", script)
    sentinel = _port(r'echo "port (\d+)"', script)
    replication = _port(r"replicaof \$primary (\d+)", script)
    asked = _port(r"-p (\d+)", script)  # the init container asks the Sentinels
    for component in valkey_acl.COMPONENTS:
        workload = one(docs, "Deployment", component)
        env, _ = container_env(docs, workload)
        target = parse_sentinel_url(env[_url_variable(component)])
        addresses = [*target.sentinels, (target.sentinels[0][0], monitored)]
        for host, port in addresses:
            _, number, name = backend(docs, host.partition(".")[2], port)
            for direction, pod, peer in (
                ("Egress", _labels(workload), valkey),
                ("Ingress", valkey, _labels(workload)),
            ):
                assert allows(docs, direction, pod, peer, (number, name)), (
                    f"{direction} {component} -> {host}:{port}"
                )
    for port in {monitored, sentinel, replication, asked}:
        _, number, name = backend(docs, "valkey-headless", port)
        assert allows(docs, "Egress", valkey, valkey, (number, name)), port
        assert allows(docs, "Ingress", valkey, valkey, (number, name)), port
    assert {sentinel, asked} == {26379}
    assert {monitored, replication} == {6379}
    stranger = {"app.kubernetes.io/name": "stranger"}
    assert not allows(docs, "Ingress", valkey, stranger, (26379, "sentinel"))
    assert not allows(docs, "Egress", valkey, stranger, (6379, "valkey"))
    assert not allows(docs, "Ingress", valkey, valkey, (9999, "other"))
    migrations = _labels(one(docs, "Job", "migrations"))
    assert not allows(docs, "Egress", migrations, valkey, (26379, "sentinel"))


def test_the_mesh_leaves_valkey_plain_tcp(ha_docs: list[Manifest]) -> None:
    """The clients have sidecars, Valkey has none (test_istio.py): no mTLS or authorization
    policy applies to it, no DestinationRule makes a client's proxy speak mTLS to it, no Sidecar
    limits where the proxies may go, and every port is named tcp-* (opaque TCP for Istio)."""
    docs = ha_docs
    valkey = _labels(one(docs, "StatefulSet", "valkey"))
    assert valkey.get("sidecar.istio.io/inject") != "true"
    for kind in ("PeerAuthentication", "AuthorizationPolicy"):
        for policy in of_kind(docs, kind):
            labels = policy["spec"].get("selector", {}).get("matchLabels")
            assert labels is None or not labels.items() <= valkey.items(), policy["metadata"]
    hosts = {r["spec"]["host"].split(".")[0] for r in of_kind(docs, "DestinationRule")}
    assert not hosts & {"valkey", "valkey-headless", "*"}, hosts
    assert not of_kind(docs, "Sidecar")
    for name in ("valkey", "valkey-headless"):
        for port in one(docs, "Service", name)["spec"]["ports"]:
            if port["port"] in (6379, 26379):
                assert port["name"].startswith("tcp-"), (name, port)


def test_replication_and_sentinel_log_in_as_their_own_users(ha_docs: list[Manifest]) -> None:
    docs = ha_docs
    statefulset = one(docs, "StatefulSet", "valkey")
    users = valkey_users(docs)
    variables = {
        valkey_acl.REPLICA: "VALKEY_REPLICA_PASSWORD",
        valkey_acl.SENTINEL: "VALKEY_SENTINEL_USER_PASSWORD",
    }
    keys = {valkey_acl.REPLICA: "replica", valkey_acl.SENTINEL: "sentinel-user"}
    for user, rules in valkey_acl.HA_RULES.items():
        assert users[user] == ["on", f">$({variables[user]})", *rules], user
        assert env_secret(statefulset, variables[user]) == ("valkey", keys[user])
    script = _script(docs)
    assert re.search(r'"masteruser replica"', script)
    assert re.search(r'"masterauth \$VALKEY_REPLICA_PASSWORD"', script)
    assert re.search(r'"sentinel auth-user portico sentinel"', script)
    assert re.search(r'"sentinel auth-pass portico \$VALKEY_SENTINEL_USER_PASSWORD"', script)
    assert "admin" not in script
    init = pod_template(statefulset)["initContainers"][0]
    assert {e["valueFrom"]["secretKeyRef"]["key"] for e in init["env"]} == {
        "replica",
        "sentinel-user",
        "sentinel",
    }
    data = one(docs, "ExternalSecret", "valkey")["spec"]["data"]
    remote = {d["secretKey"]: d["remoteRef"] for d in data}
    for key in ("sentinel", "replica", "sentinel-user"):
        assert remote[key] == {"key": "portico/valkey", "property": key}, key
