"""skaffold.yaml, structurally: every Dockerfile is an artifact built from the repository root, the
dev overlay is rendered with kustomize, and the profiles exist (test_images.py checks the
Dockerfiles themselves)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.conftest import ROOT, yaml_to_json

DOCKERFILES = {
    "portico/gateway": "gateway/Dockerfile",
    "portico/users": "services/Dockerfile",
    "portico/auth": "services/Dockerfile",
    "portico/audit": "services/Dockerfile",
    "portico/migrations": "migrations/Dockerfile",
}


@pytest.fixture(scope="module")
def skaffold() -> Any:
    (config,) = yaml_to_json((ROOT / "skaffold.yaml").read_text())
    return config


def test_artifacts_build_every_dockerfile_from_the_root(skaffold: Any) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta13"
    assert skaffold["kind"] == "Config"
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert artifacts.keys() == DOCKERFILES.keys()
    for image, dockerfile in DOCKERFILES.items():
        assert artifacts[image]["context"] == "."
        assert artifacts[image]["docker"]["dockerfile"] == dockerfile
        assert artifacts[image]["runtimeType"] == "python", "skaffold debug: entrypoint is a script"
        assert (ROOT / dockerfile).is_file()


def test_build_and_render_settings(skaffold: Any) -> None:
    assert skaffold["build"]["tagPolicy"] == {"gitCommit": {}}
    assert set(skaffold["build"]["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert skaffold["manifests"]["kustomize"]["paths"] == ["k8s/skaffold"]
    assert skaffold["deploy"] == {"kubectl": {}}
    (forward,) = skaffold["portForward"]
    assert (forward["resourceType"], forward["resourceName"], forward["port"]) == (
        "service",
        "gateway",
        8000,
    )
    assert forward["namespace"] == "portico-dev"


def test_profiles(skaffold: Any) -> None:
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert profiles.keys() == {"dev", "prod", "debug"}
    assert profiles["dev"]["activation"] == [{"command": "dev"}]
    assert profiles["debug"]["activation"] == [{"command": "debug"}]
    prod = profiles["prod"]
    assert prod["manifests"]["kustomize"]["paths"] == ["k8s/overlays/prod"]
    # A profile's `local` replaces the top-level one whole: it restates the BuildKit settings.
    assert prod["build"]["local"] == {"push": True, "useBuildkit": True, "concurrency": 2}
    assert prod["build"]["tagPolicy"]["gitCommit"]["variant"] in ("CommitSha", "AbbrevCommitSha")
    for profile in profiles.values():
        for path in profile.get("manifests", {}).get("kustomize", {}).get("paths", []):
            assert (ROOT / path / "kustomization.yaml").is_file()
