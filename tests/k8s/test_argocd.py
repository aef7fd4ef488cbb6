"""argocd/ against the overlays: what Argo CD would sync, checked offline.

* every source path in the repository renders with ``kubectl kustomize``, and the ApplicationSet's
  git directory generator yields exactly the overlays;
* the generated Applications (template + templatePatch, rendered here for each overlay) sync
  automatically with prune + selfHeal everywhere but prod;
* the AppProject allows every kind the overlays render, and their namespaces;
* sync waves: operators/CRDs -> database and cache -> migrations (Sync hook) -> services -> mesh
  policy, inside each environment (k8s/components/sync-waves) and in the root app;
* the Lua health checks of argocd-cm-health.yaml, run against sample objects (lupa).

The CRs themselves are schema-checked by ``make k8s-check`` (k8s/tools, @kubernetes-models/argo-cd).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from typing import Any

import pytest

from tests.k8s.conftest import OVERLAYS, ROOT, TOOLS_PYTHON, Manifest, of_kind, one, yaml_to_json

#: This repository in every Argo CD object: one clearly marked placeholder (docs/kubernetes.md).
REPO = "https://github.com/example/portico.git"
ARGOCD = ROOT / "argocd"
#: The tiers of an environment, by wave (k8s/components/sync-waves).
PREREQUISITES = -3
DATA = -2
MIGRATIONS = -1
SERVICES = 0
MESH_POLICY = 1
DATA_KINDS = {"Cluster", "Pooler", "ScheduledBackup"}
PREREQUISITE_KINDS = {"ServiceAccount", "ExternalSecret", "NetworkPolicy", "AnalysisTemplate"}
SERVICE_KINDS = {"Deployment", "Rollout"}
MESH_POLICY_KINDS = {
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Sidecar",
    "Telemetry",
}
#: Charts whose CRDs exceed client-side apply's 256 KiB annotation limit.
SERVER_SIDE = {
    "istio-base",
    "external-secrets",
    "cloudnative-pg",
    "kube-prometheus-stack",
    "prometheus-operator-crds",
    "eck-operator",
}
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def kustomize(path: str) -> list[Manifest]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True
    ).stdout
    return yaml_to_json(out)


@pytest.fixture(scope="module")
def argocd() -> list[Manifest]:
    """What the root app syncs, plus the root app itself (applied by hand)."""
    return [*kustomize("argocd"), *yaml_to_json((ARGOCD / "root.yaml").read_text())]


def wave(doc: Manifest) -> int:
    annotations = doc["metadata"].get("annotations") or {}
    return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))


def group_of(doc: Manifest) -> str:
    api: str = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


# ---------------------------------------------------------------- Go templates (ApplicationSet)

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_IF = re.compile(r'^if (eq|ne) (\.path\.\w+) "([^"]*)"$')


def go_template(text: str, params: dict[str, str]) -> str:
    """The subset of Go templates the ApplicationSet uses: ``{{ .path.x }}``,
    ``{{- if eq|ne .path.x "v" }}`` … ``{{- end }}`` and ``{{-``/``-}}`` trimming; anything else
    fails the test (so the template cannot outgrow what is checked here)."""
    out: list[str] = []
    active = [True]
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(text):
        chunk = text[pos : match.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if match.group(1):
            chunk = chunk.rstrip()
        if all(active):
            out.append(chunk)
        action = match.group(2)
        condition = _IF.match(action)
        if condition:
            op, key, value = condition.groups()
            active.append((params[key] == value) == (op == "eq"))
        elif action == "end":
            active.pop()
        elif action in params:
            if all(active):
                out.append(params[action])
        else:
            raise AssertionError(f"template action not checked by this test: {action!r}")
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = text[pos:]
    out.append(tail.lstrip() if trim_next else tail)
    assert active == [True], "unbalanced {{ if }}/{{ end }}"
    return "".join(out)


def _render_strings(node: Any, params: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _render_strings(v, params) for k, v in node.items()}
    if isinstance(node, list):
        return [_render_strings(v, params) for v in node]
    if isinstance(node, str):
        return go_template(node, params)
    return node


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return copy.deepcopy(patch)


def generated_applications(appset: Manifest) -> dict[str, Manifest]:
    """The Application the ApplicationSet makes for each directory its generator matches."""
    spec = appset["spec"]
    assert spec["goTemplate"] is True
    assert spec["goTemplateOptions"] == ["missingkey=error"]
    (generator,) = spec["generators"]
    git = generator["git"]
    assert git["repoURL"] == REPO
    paths: list[str] = []
    for directory in git["directories"]:
        assert not directory.get("exclude"), "excludes are not expanded by this test"
        paths += sorted(
            str(p.relative_to(ROOT)) for p in ROOT.glob(directory["path"]) if p.is_dir()
        )
    apps = {}
    for path in paths:
        params = {".path.path": path, ".path.basename": path.rsplit("/", 1)[-1]}
        app = _render_strings(spec["template"], params)
        patch = yaml_to_json(go_template(spec["templatePatch"], params))
        (patch_doc,) = patch
        apps[params[".path.basename"]] = _merge(app, patch_doc)
    return apps


@pytest.fixture(scope="module")
def environments(argocd: list[Manifest]) -> dict[str, Manifest]:
    return generated_applications(one(argocd, "ApplicationSet", "portico"))


# ---------------------------------------------------------------- sources and paths


def test_root_app_syncs_the_argocd_kustomization(argocd: list[Manifest]) -> None:
    root = one(argocd, "Application", "portico-root")
    assert root["spec"]["source"] == {"repoURL": REPO, "targetRevision": "main", "path": "argocd"}
    assert root["spec"]["destination"]["namespace"] == "argocd"
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    listed = {d["metadata"]["name"] for d in argocd} - {"portico-root"}
    files = {p.stem for p in ARGOCD.glob("*/*.yaml")}
    assert listed == files | {"portico"}, "a file under argocd/ that the root app does not sync"


def test_every_repository_source_path_renders(
    argocd: list[Manifest], environments: dict[str, Manifest]
) -> None:
    sources = [a["spec"]["source"] for a in of_kind(argocd, "Application")]
    sources += [a["spec"]["source"] for a in environments.values()]
    in_repo = [s for s in sources if "chart" not in s]
    assert {s["path"] for s in in_repo} == {
        "argocd",
        "observability",
        "k8s/cluster/namespaces",
        "k8s/cluster/config",
        *(f"k8s/overlays/{e}" for e in OVERLAYS),
    }
    for source in in_repo:
        assert source["repoURL"] == REPO
        assert kustomize(source["path"]), f"{source['path']} renders nothing"


def test_the_generator_yields_exactly_the_overlays(environments: dict[str, Manifest]) -> None:
    assert set(environments) == set(OVERLAYS)
    overlays = {p.parent.name for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml")}
    assert overlays == set(OVERLAYS)
    for env, app in environments.items():
        assert app["metadata"]["name"] == f"portico-{env}"
        assert app["spec"]["project"] == "portico"
        assert app["spec"]["source"]["path"] == f"k8s/overlays/{env}"
        # The Application's namespace is the one the overlay renders into.
        namespaces = {d["metadata"].get("namespace") for d in kustomize(f"k8s/overlays/{env}")}
        assert namespaces == {app["spec"]["destination"]["namespace"]} == {f"portico-{env}"}


def test_sync_is_automated_with_prune_and_self_heal_except_prod(
    environments: dict[str, Manifest],
) -> None:
    for env, app in environments.items():
        policy = app["spec"]["syncPolicy"]
        assert "CreateNamespace=true" in policy["syncOptions"]
        assert policy["retry"]["limit"] >= 1
        labels = policy["managedNamespaceMetadata"]["labels"]
        assert "istio-injection" not in labels, "istio/ injects per pod, not per namespace"
        if env == "prod":
            assert "automated" not in policy, "prod syncs by hand"
        else:
            assert policy["automated"] == {"prune": True, "selfHeal": True}, env


def test_one_repository_placeholder_everywhere(argocd: list[Manifest]) -> None:
    text = "\n".join(p.read_text() for p in ARGOCD.rglob("*.yaml"))
    git_urls = set(re.findall(r"https://\S+\.git\b", text))
    assert git_urls == {REPO}
    project = one(argocd, "AppProject", "portico")
    assert project["spec"]["sourceRepos"] == [REPO]


# ---------------------------------------------------------------- projects


def _allowed(entries: list[dict[str, str]], group: str, kind: str) -> bool:
    return any(e["group"] == group and e["kind"] == kind for e in entries)


def test_the_project_allows_every_rendered_kind_and_namespace(
    argocd: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    spec = one(argocd, "AppProject", "portico")["spec"]
    namespaced = spec["namespaceResourceWhitelist"]
    assert not any("*" in (e["group"], e["kind"]) for e in namespaced), "no wildcards"
    assert spec["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    for env, docs in rendered.items():
        for doc in docs:
            name = f"{env}: {doc['kind']}/{doc['metadata']['name']}"
            assert "namespace" in doc["metadata"], f"{name} is cluster-scoped"
            assert _allowed(namespaced, group_of(doc), doc["kind"]), f"{name} is not whitelisted"
    destinations = {(d["server"], d["namespace"]) for d in spec["destinations"]}
    assert destinations == {("https://kubernetes.default.svc", f"portico-{e}") for e in OVERLAYS}


#: Applications whose deletion must not delete what they run: Argo CD itself, the namespaces.
KEEP_ON_DELETE = {"argo-cd", "cluster-namespaces"}


def test_every_application_is_allowed_by_its_project(
    argocd: list[Manifest], environments: dict[str, Manifest]
) -> None:
    projects = {p["metadata"]["name"]: p["spec"] for p in of_kind(argocd, "AppProject")}
    for app in [*of_kind(argocd, "Application"), *environments.values()]:
        name, spec = app["metadata"]["name"], app["spec"]
        if name == "portico-root":
            assert spec["project"] == "default", "the root creates the projects"
            continue
        project = projects[spec["project"]]
        assert spec["source"]["repoURL"] in project["sourceRepos"], name
        destination = (spec["destination"]["server"], spec["destination"]["namespace"])
        allowed = {(d["server"], d["namespace"]) for d in project["destinations"]}
        assert destination in allowed, name
        if name in KEEP_ON_DELETE:  # tests/k8s/test_cluster.py: these never cascade
            assert "finalizers" not in app["metadata"], name
            continue
        assert "resources-finalizer.argocd.argoproj.io" in app["metadata"]["finalizers"], name


def test_operators_are_pinned_charts(argocd: list[Manifest]) -> None:
    operators = [a for a in of_kind(argocd, "Application") if "chart" in a["spec"]["source"]]
    names = {a["metadata"]["name"] for a in operators}
    assert {"cloudnative-pg", "external-secrets", "istio-base", "istiod", "cert-manager"} <= names
    assert {"argo-rollouts", "kube-prometheus-stack"} <= names
    for app in operators:
        name, spec = app["metadata"]["name"], app["spec"]
        assert EXACT_VERSION.match(spec["source"]["targetRevision"]), name
        assert spec["project"] == "platform", name
        options = spec["syncPolicy"]["syncOptions"]
        assert "CreateNamespace=true" in options, name
        if name in SERVER_SIDE:
            assert "ServerSideApply=true" in options, f"{name}: CRDs too large for client-side"
    istio = {
        a["spec"]["source"]["targetRevision"]
        for a in operators
        if "istio" in a["spec"]["source"]["repoURL"]
    }
    assert len(istio) == 1, "istio-base and istiod move together"


# ---------------------------------------------------------------- sync waves


#: The observability charts: they mount what the `observability` Application (wave -2) makes.
OBSERVABILITY_CHARTS = {"kube-prometheus-stack", "opentelemetry-collector", "jaeger", "fluent-bit"}


def test_root_app_waves_order_projects_crds_operators_then_portico(argocd: list[Manifest]) -> None:
    projects = {wave(p) for p in of_kind(argocd, "AppProject")}
    operators = [a for a in of_kind(argocd, "Application") if "chart" in a["spec"]["source"]]
    crds = {wave(a) for a in operators if a["metadata"]["name"] == "istio-base"}
    platform = {wave(a) for a in operators if a["metadata"]["name"] in OBSERVABILITY_CHARTS}
    others = {
        wave(a)
        for a in operators
        if a["metadata"]["name"] not in {"istio-base", *OBSERVABILITY_CHARTS}
    }
    config = {wave(one(argocd, "Application", "observability"))}
    portico = {wave(one(argocd, "ApplicationSet", "portico"))}
    assert max(projects) < min(crds) <= max(crds) < min(others)
    assert others == {-3}, "operators/CRDs are wave -3"
    # CRDs (-3) -> the observability configuration (-2) -> the charts that mount it (-1).
    assert max(others) < min(config) <= max(config) < min(platform)
    assert platform == {-1}
    assert max(platform) < min(portico)


def test_environment_waves_order_the_tiers(docs: list[Manifest]) -> None:
    def waves(selected: list[Manifest]) -> set[int]:
        return {wave(d) for d in selected}

    prerequisites = [d for d in docs if d["kind"] in PREREQUISITE_KINDS]
    data = [d for d in docs if d["kind"] in DATA_KINDS] + [
        one(docs, "StatefulSet", "valkey"),
        one(docs, "Service", "valkey"),
    ]
    job = one(docs, "Job", "migrations")
    services = [d for d in docs if d["kind"] in SERVICE_KINDS]
    mesh = [d for d in docs if d["kind"] in MESH_POLICY_KINDS]
    assert waves(prerequisites) == {PREREQUISITES}
    assert waves(data) == {DATA}
    assert wave(job) == MIGRATIONS
    assert waves(services) == {SERVICES}
    assert waves(mesh) <= {MESH_POLICY}
    assert {wave(d) for d in docs} <= {PREREQUISITES, DATA, MIGRATIONS, SERVICES, MESH_POLICY}


def test_migration_job_runs_in_its_wave_after_the_database(docs: list[Manifest]) -> None:
    """A Sync-phase hook keeps its wave; a PreSync hook would run before every wave, so on an
    environment's first sync it would wait for a database the same sync has not created yet."""
    job = one(docs, "Job", "migrations")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert "BeforeHookCreation" in annotations["argocd.argoproj.io/hook-delete-policy"]
    services = [d for d in docs if d["kind"] in SERVICE_KINDS]
    assert services
    assert all(wave(job) < wave(s) for s in services)
    assert all(wave(d) < wave(job) for d in docs if d["kind"] in DATA_KINDS)


def test_every_overlay_has_the_sync_waves_component_last() -> None:
    for env in OVERLAYS:
        (config,) = yaml_to_json(
            (ROOT / "k8s" / "overlays" / env / "kustomization.yaml").read_text()
        )
        assert config["components"][-1] == "../../components/sync-waves", env


# ---------------------------------------------------------------- health checks (Lua)

_RUN_LUA = """
import json, sys
import lupa

lua = lupa.LuaRuntime(unpack_returned_tuples=True)

def table(value):
    if isinstance(value, dict):
        return lua.table_from({k: table(v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([table(v) for v in value])
    return value

results = []
for script, obj in json.load(sys.stdin):
    check = lua.eval("function(obj)\\n" + script + "\\nend")
    hs = check(table(obj))
    results.append(hs["status"])
json.dump(results, sys.stdout)
"""


def health(key: str, objects: list[Manifest]) -> list[str]:
    (config,) = yaml_to_json((ARGOCD / "argocd-cm-health.yaml").read_text())
    script = config["data"][f"resource.customizations.health.{key}"]
    out = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _RUN_LUA],
        input=json.dumps([[script, o] for o in objects]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    statuses: list[str] = json.loads(out)
    return statuses


def _meta(**annotations: str) -> Manifest:
    return {"name": "x", "annotations": annotations}


def test_health_of_applications() -> None:
    apps = [
        {"metadata": _meta()},
        {"metadata": _meta(), "status": {"health": {"status": "Healthy"}}},
        {"metadata": _meta(), "status": {"health": {"status": "Degraded", "message": "x"}}},
    ]
    assert health("argoproj.io_Application", apps) == ["Progressing", "Healthy", "Degraded"]


def test_health_of_cloudnative_pg_clusters() -> None:
    def cluster(phase: str | None = None, **extra: Any) -> Manifest:
        status = {"phase": phase, "phaseReason": "r", "conditions": []} if phase else None
        doc: Manifest = {"metadata": _meta(), "spec": {"instances": 1}, **extra}
        if status:
            doc["status"] = status
        return doc

    hibernated = cluster("Cluster in healthy state")
    hibernated["status"]["conditions"] = [{"type": "cnpg.io/hibernation", "status": "True"}]
    suspended = cluster("Cluster in healthy state")
    suspended["metadata"] = _meta(**{"cnpg.io/reconciliation": "disabled"})
    assert health(
        "postgresql.cnpg.io_Cluster",
        [
            cluster(),
            cluster("Setting up primary"),
            cluster("Cluster in healthy state"),
            cluster("Failing over"),
            hibernated,
            suspended,
        ],
    ) == ["Progressing", "Progressing", "Healthy", "Degraded", "Suspended", "Suspended"]


def test_health_of_cloudnative_pg_poolers() -> None:
    def pooler(want: int, status: Manifest | None) -> Manifest:
        doc: Manifest = {"metadata": _meta(), "spec": {"instances": want}}
        if status is not None:
            doc["status"] = status
        return doc

    assert health(
        "postgresql.cnpg.io_Pooler",
        [
            pooler(2, None),
            pooler(2, {"phase": "active", "instances": 1}),
            pooler(2, {"phase": "active", "instances": 2}),
            pooler(1, {"instances": 1}),  # operators before the `phase` field
            pooler(1, {"phase": "failed", "phaseReason": "bad", "instances": 0}),
            pooler(1, {"phase": "paused", "instances": 1}),
        ],
    ) == ["Progressing", "Progressing", "Healthy", "Healthy", "Degraded", "Suspended"]


def test_health_of_external_secrets() -> None:
    def secret(ready: str | None) -> Manifest:
        doc: Manifest = {"metadata": _meta(), "spec": {}}
        if ready is not None:
            doc["status"] = {"conditions": [{"type": "Ready", "status": ready, "message": "m"}]}
        return doc

    statuses = health(
        "external-secrets.io_ExternalSecret", [secret(None), secret("True"), secret("False")]
    )
    assert statuses == ["Progressing", "Healthy", "Degraded"]
