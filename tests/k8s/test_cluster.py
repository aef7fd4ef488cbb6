"""Cluster prerequisites (k8s/cluster, argocd/cluster): every namespace Argo CD deploys into exists
with a Pod Security level, Portico's pods meet the level of their namespace (restricted), and the
issuer and secret store the overlays name are the ones the cluster defines."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.k8s.conftest import OVERLAYS, ROOT, Manifest, of_kind, one, yaml_to_json
from tests.k8s.test_argocd import generated_applications, kustomize

LEVELS = ("privileged", "baseline", "restricted")
#: Namespaces Kubernetes itself owns (their labels are not ours to set).
SYSTEM = {"kube-system"}
POD_KINDS = ("Deployment", "StatefulSet", "Job", "Rollout", "CronJob", "DaemonSet")
#: Volume types Pod Security `restricted` allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> list[Manifest]:
    return kustomize("k8s/cluster")


@pytest.fixture(scope="module")
def argocd_apps() -> list[Manifest]:
    docs = kustomize("argocd")
    return [
        *of_kind(docs, "Application"),
        *generated_applications(one(docs, "ApplicationSet", "portico")).values(),
    ]


@pytest.fixture(scope="module")
def namespaces(cluster: list[Manifest]) -> dict[str, dict[str, str]]:
    return {
        ns["metadata"]["name"]: ns["metadata"]["labels"] for ns in of_kind(cluster, "Namespace")
    }


def k8s_minor() -> str:
    match = re.search(r"^K8S_VERSION := (\d+)\.(\d+)\.", (ROOT / "Makefile").read_text(), re.M)
    assert match
    return f"v{match.group(1)}.{match.group(2)}"


def test_every_destination_namespace_is_defined_with_a_pod_security_level(
    argocd_apps: list[Manifest], namespaces: dict[str, dict[str, str]]
) -> None:
    destinations = {a["spec"]["destination"]["namespace"] for a in argocd_apps} - SYSTEM
    assert {"portico-dev", "portico-staging", "portico-prod", "argocd"} <= destinations
    assert destinations <= namespaces.keys(), "a namespace Argo CD deploys into is not defined"
    for name, labels in namespaces.items():
        assert labels["pod-security.kubernetes.io/enforce"] in LEVELS, name
        assert labels["pod-security.kubernetes.io/enforce-version"] == k8s_minor(), name
        assert labels["pod-security.kubernetes.io/warn"] in LEVELS, name
        assert labels["pod-security.kubernetes.io/audit"] in LEVELS, name
    for env in OVERLAYS:
        labels = namespaces[f"portico-{env}"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted", env


def restricted_violations(workload: Manifest) -> list[str]:
    """What Pod Security `restricted` (v1.32) rejects in a workload's pod template."""
    spec: dict[str, Any] = workload["spec"]
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if template is None:  # a Rollout with workloadRef: its Deployment is checked
        return []
    pod = template["spec"]
    pod_sc = pod.get("securityContext", {})
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)}")
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds {caps['add']}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
            problems.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{where}: hostPort")
    return problems


def test_portico_pods_meet_the_restricted_level(rendered: dict[str, list[Manifest]]) -> None:
    checked = 0
    for env, docs in rendered.items():
        for workload in (d for d in docs if d["kind"] in POD_KINDS):
            problems = restricted_violations(workload)
            checked += 1
            assert not problems, (
                f"{env}: {workload['kind']}/{workload['metadata']['name']}: {problems}"
            )
    assert checked >= 15


def test_portico_containers_have_a_read_only_root_filesystem(
    rendered: dict[str, list[Manifest]],
) -> None:
    for env, docs in rendered.items():
        for workload in (d for d in docs if d["kind"] in POD_KINDS):
            template = workload["spec"].get("template")
            if template is None:
                continue
            pod = template["spec"]
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                read_only = c.get("securityContext", {}).get("readOnlyRootFilesystem")
                assert read_only is True, f"{env}: {workload['metadata']['name']}/{c['name']}"


def test_the_restricted_check_rejects_what_the_standard_rejects() -> None:
    base: Manifest = {
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "app",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            }
        },
    }
    assert restricted_violations(base) == []
    pod = base["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # istio-init without the CNI agent: the reason istio-cni is installed.
    container["securityContext"]["capabilities"]["add"] = ["NET_ADMIN", "NET_RAW"]
    pod["volumes"] = [{"name": "h", "hostPath": {"path": "/"}}]
    pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    problems = restricted_violations(base)
    assert len(problems) == 3, problems


def test_overlays_name_the_issuer_and_store_the_cluster_defines(
    cluster: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    issuers = {i["metadata"]["name"] for i in of_kind(cluster, "ClusterIssuer")}
    (store,) = of_kind(cluster, "ClusterSecretStore")
    allowed = set(store["spec"]["conditions"][0]["namespaces"])
    used_stores, used_issuers = set(), set()
    for docs in rendered.values():
        for es in of_kind(docs, "ExternalSecret"):
            ref = es["spec"]["secretStoreRef"]
            used_stores.add((ref["kind"], ref["name"]))
            assert es["metadata"]["namespace"] in allowed, "the store refuses this namespace"
        for cert in of_kind(docs, "Certificate"):
            ref = cert["spec"]["issuerRef"]
            used_issuers.add(ref["name"])
            assert ref["kind"] == "ClusterIssuer"
    assert used_stores == {("ClusterSecretStore", store["metadata"]["name"])}
    assert used_issuers
    assert used_issuers <= issuers
    assert {f"portico-{env}" for env in OVERLAYS} == allowed


def test_argo_cd_is_pinned_and_cannot_delete_itself(argocd_apps: list[Manifest]) -> None:
    (app,) = [a for a in argocd_apps if a["metadata"]["name"] == "argo-cd"]
    source = app["spec"]["source"]
    assert source["chart"] == "argo-cd"
    assert re.fullmatch(r"\d+\.\d+\.\d+", source["targetRevision"])
    assert "finalizers" not in app["metadata"], "deleting the Application must not uninstall it"
    assert app["spec"]["syncPolicy"]["automated"]["prune"] is False
    (ns_app,) = [a for a in argocd_apps if a["metadata"]["name"] == "cluster-namespaces"]
    assert "finalizers" not in ns_app["metadata"]
    assert ns_app["spec"]["syncPolicy"]["automated"]["prune"] is False


def test_sidecars_use_the_cni_agent(argocd_apps: list[Manifest]) -> None:
    apps = {a["metadata"]["name"]: a for a in argocd_apps}
    istiod = apps["istiod"]["spec"]["source"]["helm"]["valuesObject"]
    assert istiod["pilot"]["cni"]["enabled"] is True
    cni = apps["istio-cni"]["spec"]
    assert cni["source"]["chart"] == "cni"
    assert cni["destination"]["namespace"] == "istio-system"
    assert cni["source"]["targetRevision"] == apps["istiod"]["spec"]["source"]["targetRevision"]


def test_cluster_documents_parse() -> None:
    for path in (ROOT / "k8s" / "cluster").rglob("*.yaml"):
        assert yaml_to_json(path.read_text()), path
