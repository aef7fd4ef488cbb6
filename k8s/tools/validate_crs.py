"""Validate the custom resources of rendered overlays that kubernetes-validate cannot check.

Run by ``make k8s-check`` with the tools venv (``.tools/k8s``: PyYAML + jsonschema):

    python k8s/tools/validate_crs.py RENDERED.yaml [...]

* CloudNativePG (``postgresql.cnpg.io/v1`` Cluster, Pooler, ScheduledBackup): ``spec`` against the
  ``openAPIV3Schema`` of the CRDs vendored in ``k8s/crds/cloudnative-pg``, with
  ``additionalProperties: false`` added wherever a schema lists its properties (catches typos).
* Every other custom resource is written to ``RENDERED.crs.json`` for ``validate-crs.mjs``
  (npm ``@kubernetes-models/*``: schema, and unknown fields); a kind that neither knows fails
  the check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "k8s" / "crds" / "cloudnative-pg"
CNPG = {
    "Cluster": "postgresql.cnpg.io_clusters.yaml",
    "Pooler": "postgresql.cnpg.io_poolers.yaml",
    "ScheduledBackup": "postgresql.cnpg.io_scheduledbackups.yaml",
}
#: Kinds the npm models validate (validate-crs.mjs).
NPM_KINDS = {
    ("external-secrets.io/v1", "ExternalSecret"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    # Istio (istio/): @kubernetes-models/istio
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "RequestAuthentication"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "Gateway"),
    ("telemetry.istio.io/v1", "Telemetry"),
    # Argo Rollouts (k8s/components/rollouts): @kubernetes-models/argo-rollouts
    ("argoproj.io/v1alpha1", "Rollout"),
    ("argoproj.io/v1alpha1", "AnalysisTemplate"),
    # cert-manager (istio/certificate.yaml, k8s/cluster/config): @kubernetes-models/cert-manager
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    # External Secrets' store (k8s/cluster/config)
    ("external-secrets.io/v1", "ClusterSecretStore"),
    # Argo CD (argocd/): @kubernetes-models/argo-cd
    ("argoproj.io/v1alpha1", "Application"),
    ("argoproj.io/v1alpha1", "AppProject"),
    ("argoproj.io/v1alpha1", "ApplicationSet"),
}


#: ECK (observability/elastic): no registry ships a schema package or its CRDs, so the ECK v1
#: API's documented spec fields are listed here (elasticsearch.k8s.elastic.co/v1, kibana.k8s.
#: elastic.co/v1): a misspelt or missing top-level field fails the check, nested ones are not seen.
ECK: dict[tuple[str, str], tuple[set[str], set[str]]] = {
    ("elasticsearch.k8s.elastic.co/v1", "Elasticsearch"): (
        {"version", "nodeSets"},
        {
            "version", "image", "http", "transport", "nodeSets", "updateStrategy",
            "podDisruptionBudget", "auth", "secureSettings", "serviceAccountName",
            "remoteClusters", "volumeClaimDeletePolicy", "monitoring", "revisionHistoryLimit",
        },
    ),
    ("kibana.k8s.elastic.co/v1", "Kibana"): (
        {"version", "count"},
        {
            "version", "image", "count", "elasticsearchRef", "enterpriseSearchRef", "config",
            "http", "podTemplate", "secureSettings", "serviceAccountName", "monitoring",
            "revisionHistoryLimit",
        },
    ),
}  # fmt: skip
ECK_NODE_SET = {"name", "count", "config", "podTemplate", "volumeClaimTemplates"}


def eck_errors(doc: dict[str, Any]) -> list[str]:
    required, allowed = ECK[(doc["apiVersion"], doc["kind"])]
    spec = doc.get("spec", {})
    errors = [f"spec.{k} is required" for k in sorted(required - set(spec))]
    errors += [f"spec.{k} is not a field of this kind" for k in sorted(set(spec) - allowed)]
    for index, node_set in enumerate(spec.get("nodeSets", [])):
        where = f"spec.nodeSets[{index}]"
        errors += [f"{where}.{k} is required" for k in ("name", "count") if k not in node_set]
        errors += [f"{where}.{k} is unknown" for k in sorted(set(node_set) - ECK_NODE_SET)]
    return errors


def closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists ``properties``."""
    if isinstance(schema, dict):
        out = {key: closed(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


def spec_validator(kind: str) -> Draft202012Validator:
    crd = yaml.safe_load((CRDS / CNPG[kind]).read_text())
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = closed(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    return Draft202012Validator(schema)


def main(paths: list[str]) -> int:
    validators = {kind: spec_validator(kind) for kind in CNPG}
    failures = 0
    for path in paths:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        others = []
        for doc in docs:
            api, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
            if api == "postgresql.cnpg.io/v1" and kind in validators:
                errors = sorted(validators[kind].iter_errors(doc["spec"]), key=str)
                for error in errors:
                    where = "/".join(str(p) for p in error.absolute_path)
                    sys.stderr.write(f"{path}: {kind}/{name} spec/{where}: {error.message}\n")
                failures += len(errors)
            elif (api, kind) in ECK:
                for error in eck_errors(doc):
                    sys.stderr.write(f"{path}: {kind}/{name} {error}\n")
                    failures += 1
            elif (api, kind) in NPM_KINDS:
                others.append(doc)
            elif "." in api.split("/")[0]:  # a group with a dot, not built in
                builtin = api.split("/")[0].endswith(".k8s.io") or api.startswith(
                    ("apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/")
                )
                if not builtin:
                    sys.stderr.write(f"{path}: {api} {kind}/{name}: no validator for this kind\n")
                    failures += 1
        Path(path).with_suffix(".crs.json").write_text(json.dumps(others))
        sys.stdout.write(f"{path}: CloudNativePG specs checked, {len(others)} CRs for npm models\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
