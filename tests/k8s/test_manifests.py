"""Consistency of the rendered overlays: ports, probes, images, secrets, hardening, HA."""

from __future__ import annotations

import re
import subprocess

from tests.k8s.conftest import (
    ROOT,
    TOOLS_PYTHON,
    Manifest,
    config_of,
    of_kind,
    one,
    pod_template,
    yaml_to_json,
)

#: The process and the setting that holds its listening port.
PORT_SETTINGS = {
    "gateway": "GATEWAY_PORT",
    "users": "USERS_GRPC_PORT",
    "auth": "AUTH_GRPC_PORT",
    "audit": "AUDIT_GRPC_PORT",
}
#: Shutdown budget of each app (delay + grace, seconds; docs/configuration.md).
SHUTDOWN_S = 1 + 10
#: The writable scratch directory on a read-only root filesystem.
TMP = "/tmp"  # noqa: S108
#: Images not built here (pinned upstream images).
THIRD_PARTY = re.compile(r"^(valkey/valkey|oliver006/redis_exporter):[\w.-]+$")


def test_every_overlay_renders_every_component(docs: list[Manifest]) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for app in PORT_SETTINGS:
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"):
            assert (kind, app) in names
        assert ("HorizontalPodAutoscaler", app) in names
    assert {("Job", "migrations"), ("StatefulSet", "valkey"), ("Cluster", "postgres")} <= names
    assert ("Pooler", "postgres-pooler") in names


def test_service_ports_and_probes_match_the_configured_port(docs: list[Manifest]) -> None:
    for app, setting in PORT_SETTINGS.items():
        deployment = one(docs, "Deployment", app)
        port = int(config_of(docs, deployment)[setting])
        container = pod_template(deployment)["containers"][0]
        expected_name = "http" if app == "gateway" else "grpc"
        ports = {p["name"]: p for p in container["ports"]}
        container_port = ports.pop(expected_name)
        assert container_port["containerPort"] == port
        # Besides: the services' /metrics port (the gateway serves it on http; test_wiring.py).
        assert set(ports) == (set() if app == "gateway" else {"metrics"}), app
        (service_port,) = one(docs, "Service", app)["spec"]["ports"]
        assert service_port["name"] == expected_name
        assert service_port["port"] == port
        assert service_port["targetPort"] in (expected_name, port)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = container[probe]
            (kind,) = (k for k in ("grpc", "httpGet", "tcpSocket") if k in handler)
            assert handler[kind]["port"] in (expected_name, port), (app, probe)
        if app == "gateway":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        else:
            assert container["readinessProbe"]["grpc"] == {"port": port}


def test_upstream_targets_point_at_services(docs: list[Manifest]) -> None:
    ports = {app: one(docs, "Service", app)["spec"]["ports"][0]["port"] for app in PORT_SETTINGS}
    gateway = config_of(docs, one(docs, "Deployment", "gateway"))
    auth = config_of(docs, one(docs, "Deployment", "auth"))
    assert gateway["GATEWAY_USERS_TARGET"] == f"users:{ports['users']}"
    assert gateway["GATEWAY_AUTH_TARGET"] == f"auth:{ports['auth']}"
    assert gateway["GATEWAY_AUDIT_TARGET"] == f"audit:{ports['audit']}"
    assert auth["AUTH_USERS_TARGET"] == f"users:{ports['users']}"
    # users fetches the JWKS (token signing keys) from auth's gRPC port.
    users = config_of(docs, one(docs, "Deployment", "users"))
    assert users["USERS_AUTH_TARGET"] == f"auth:{ports['auth']}"
    # So does audit (it checks the admin's token on ListAuditEvents).
    audit = config_of(docs, one(docs, "Deployment", "audit"))
    assert audit["AUDIT_AUTH_TARGET"] == f"auth:{ports['auth']}"
    assert auth["AUTH_ENVIRONMENT"] == "production"
    for app, host in (
        ("gateway", "GATEWAY_HOST"),
        ("users", "USERS_GRPC_HOST"),
        ("audit", "AUDIT_GRPC_HOST"),
    ):
        assert config_of(docs, one(docs, "Deployment", app))[host] == "0.0.0.0"


def test_signing_key_file_is_mounted_from_a_secret(docs: list[Manifest]) -> None:
    deployment = one(docs, "Deployment", "auth")
    key_file = config_of(docs, deployment)["AUTH_SIGNING_KEY_FILES"]
    spec = pod_template(deployment)
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (name,) = (n for n, m in mounts.items() if key_file.startswith(m["mountPath"] + "/"))
    assert mounts[name]["readOnly"] is True
    assert volumes[name]["secret"]["secretName"] == "auth-signing-key"
    assert key_file.endswith("/" + volumes[name]["secret"]["items"][0]["path"])


def _skaffold_images() -> set[str]:
    skaffold = yaml_to_json((ROOT / "skaffold.yaml").read_text())[0]
    return {a["image"] for a in skaffold["build"]["artifacts"]}


def test_every_image_is_a_skaffold_artifact_or_a_pinned_upstream(
    docs: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    artifacts = _skaffold_images()
    for workload in [
        *of_kind(docs, "Deployment"),
        *of_kind(docs, "StatefulSet"),
        *of_kind(docs, "Job"),
    ]:
        for container in pod_template(workload)["containers"]:
            image: str = container["image"]
            if THIRD_PARTY.match(image):
                continue
            if image == "auto" and _istio_gateway(workload):
                continue  # the injector sets the control plane's proxy image (istio/)
            # Overlays may retag, rename or pin by digest: the last two path segments of the
            # name (without tag or digest) name the artifact.
            name, _, digest = image.partition("@")
            bare = "/".join(name.split(":")[0].split("/")[-2:])
            assert bare in artifacts, f"{workload['metadata']['name']}: {image}"
            if docs is not rendered["dev"]:  # staging and prod pin the exact image built
                assert digest.startswith("sha256:"), f"{image} is not pinned by digest"


def test_migration_job_is_a_sync_hook_without_sidecar(docs: list[Manifest]) -> None:
    job = one(docs, "Job", "migrations")
    annotations = job["metadata"]["annotations"]
    # Sync, not PreSync: a PreSync hook runs before the database wave on a first sync.
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert (
        annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation,HookSucceeded"
    )
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert template["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["MIGRATE_DIR"]["value"] == "/app/migrations"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "postgres-app"


def _dev_script_secrets() -> set[str]:
    script = (ROOT / "k8s" / "scripts" / "dev-secrets.sh").read_text()
    return set(re.findall(r"create secret generic ([a-z0-9-]+)", script)) | set(
        re.findall(r"^role_secret ([a-z0-9-]+)", script, re.MULTILINE)
    )


def test_every_referenced_configmap_and_secret_exists(
    docs: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    configmaps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    secrets |= {d["spec"]["target"]["name"] for d in of_kind(docs, "ExternalSecret")}
    secrets |= {f"{c['metadata']['name']}-app" for c in of_kind(docs, "Cluster")}  # CNPG's
    if docs is rendered["dev"]:
        secrets |= _dev_script_secrets()
    for workload in [
        *of_kind(docs, "Deployment"),
        *of_kind(docs, "StatefulSet"),
        *of_kind(docs, "Job"),
    ]:
        spec = pod_template(workload)
        name = workload["metadata"]["name"]
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, name
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in secrets, (name, env["name"])
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in configmaps, (name, env["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
    for cluster in of_kind(docs, "Cluster"):
        store = cluster["spec"].get("backup", {}).get("barmanObjectStore")
        if store:
            for ref in store["s3Credentials"].values():
                assert ref["name"] in secrets


def test_deployments_are_hardened(docs: list[Manifest]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        spec = pod_template(deployment)
        assert spec["automountServiceAccountToken"] is False
        sa = one(docs, "ServiceAccount", spec["serviceAccountName"])
        assert sa["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert isinstance(pod["runAsUser"], int)
        assert pod["runAsUser"] > 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["terminationGracePeriodSeconds"] > SHUTDOWN_S
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert {"cpu", "memory"} <= resources["limits"].keys(), name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, (name, probe)
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep"
            assert int(pre_stop[1]) + SHUTDOWN_S < spec["terminationGracePeriodSeconds"], name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == TMP]
            assert tmp, f"{name}: /tmp must be a writable emptyDir"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[tmp[0]["name"]]
        anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert any(
            t["topologyKey"] == "kubernetes.io/hostname"
            and t["labelSelector"]["matchLabels"] == selector
            for t in anti
        ), f"{name}: two replicas may share a node"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for key in ("name", "part-of", "component"):
            assert f"app.kubernetes.io/{key}" in labels, name


def test_pdbs_and_hpas_select_their_deployment(docs: list[Manifest]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert one(docs, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == selector
        target = one(docs, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]
        # With k8s/components/rollouts, the Rollout that runs the Deployment's pods is scaled.
        rollout = _rollout_of(docs, name)
        scaled = deployment if rollout is None else rollout
        assert (target["kind"], target["name"]) == (scaled["kind"], name)
        assert scaled["metadata"]["name"] == name


def test_prod_is_highly_available(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["prod"]
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        rollout = _rollout_of(docs, name)  # runs the pods instead (k8s/components/rollouts)
        assert (deployment if rollout is None else rollout)["spec"]["replicas"] >= 2, name
        assert one(docs, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] >= 2, name
    cluster = one(docs, "Cluster", "postgres")["spec"]
    assert cluster["instances"] == 3
    sync = cluster["postgresql"]["synchronous"]
    assert sync["method"] in ("any", "first")
    assert sync["number"] >= 1
    assert sync.get("dataDurability", "required") == "required"
    assert cluster["backup"]["barmanObjectStore"]["wal"]
    assert of_kind(docs, "ScheduledBackup")


def _istio_gateway(workload: Manifest) -> bool:
    """An Envoy deployed by Istio's gateway injection (istio/ingress-gateway.yaml)."""
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    return bool(annotations.get("inject.istio.io/templates") == "gateway")


def _rollout_of(docs: list[Manifest], deployment: str) -> Manifest | None:
    """The Rollout whose workloadRef is the Deployment ``deployment``, if any."""
    for rollout in of_kind(docs, "Rollout"):
        ref = rollout["spec"].get("workloadRef", {})
        if (ref.get("kind"), ref.get("name")) == ("Deployment", deployment):
            return rollout
    return None


def test_dev_needs_no_operator_besides_cloudnative_pg(rendered: dict[str, list[Manifest]]) -> None:
    groups = {d["apiVersion"].split("/")[0] for d in rendered["dev"] if "." in d["apiVersion"]}
    assert groups <= {"postgresql.cnpg.io", "apps", "batch", "policy"} | {
        g for g in groups if g.endswith(".k8s.io")
    }
    assert one(rendered["dev"], "Cluster", "postgres")["spec"]["instances"] == 1


def test_staging_and_prod_deny_by_default(rendered: dict[str, list[Manifest]]) -> None:
    for overlay in ("staging", "prod"):
        policies = of_kind(rendered[overlay], "NetworkPolicy")
        deny = one(rendered[overlay], "NetworkPolicy", "default-deny")["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        selected = {
            p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
            for p in policies
        }
        assert set(PORT_SETTINGS) | {"migrations", "valkey"} <= selected


def test_restore_script_renders_a_point_in_time_recovery() -> None:
    out = subprocess.run(
        [
            str(TOOLS_PYTHON),
            str(ROOT / "k8s" / "scripts" / "render-restore.py"),
            "--overlay=prod",
            "--target-time=2025-11-22 14:05:00+00",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (cluster,) = yaml_to_json(out)
    spec = cluster["spec"]
    recovery = spec["bootstrap"]["recovery"]
    assert "initdb" not in spec["bootstrap"]
    assert recovery["recoveryTarget"] == {"targetTime": "2025-11-22 14:05:00+00"}
    (origin,) = spec["externalClusters"]
    assert origin["name"] == recovery["source"]
    assert origin["barmanObjectStore"]["serverName"] == "postgres"
    assert spec["backup"]["barmanObjectStore"]["serverName"] != "postgres"
