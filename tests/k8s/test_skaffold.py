"""skaffold.yaml, structurally: every Dockerfile is an artifact built from the repository root."""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.conftest import ROOT, yaml_to_json

DOCKERFILES = {
    "portico/gateway": "gateway/Dockerfile",
    "portico/users": "services/users/Dockerfile",
    "portico/auth": "services/auth/Dockerfile",
    "portico/migrations": "migrations/Dockerfile",
}


@pytest.fixture(scope="module")
def skaffold() -> Any:
    (config,) = yaml_to_json((ROOT / "skaffold.yaml").read_text())
    return config


def test_artifacts_build_every_dockerfile_from_the_root(skaffold: Any) -> None:
    assert skaffold["apiVersion"].startswith("skaffold/v4")
    assert skaffold["kind"] == "Config"
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert artifacts.keys() == DOCKERFILES.keys()
    for image, dockerfile in DOCKERFILES.items():
        assert artifacts[image]["context"] == "."
        assert artifacts[image]["docker"]["dockerfile"] == dockerfile
        assert (ROOT / dockerfile).is_file()


def test_build_and_render_settings(skaffold: Any) -> None:
    assert skaffold["build"]["tagPolicy"] == {"gitCommit": {}}
    assert set(skaffold["build"]["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert skaffold["manifests"]["kustomize"]["paths"] == ["k8s/overlays/dev"]
    (forward,) = skaffold["portForward"]
    assert (forward["resourceType"], forward["resourceName"], forward["port"]) == (
        "service",
        "gateway",
        8000,
    )
    assert {p["name"] for p in skaffold["profiles"]} == {"dev", "prod", "debug"}
    for profile in skaffold["profiles"]:
        for path in profile.get("manifests", {}).get("kustomize", {}).get("paths", []):
            assert (ROOT / path / "kustomization.yaml").is_file()


def test_dockerfiles_follow_the_image_rules() -> None:
    for dockerfile in DOCKERFILES.values():
        text = (ROOT / dockerfile).read_text()
        assert "uv sync --frozen --no-install-workspace --package" in text
        assert text.count("FROM python:3.11") == 2, "multi-stage on the slim base"
        assert "USER 10001:10001" in text
        assert "PYTHONDONTWRITEBYTECODE=1" in text
        assert "org.opencontainers.image.revision" in text
        assert "--no-dev" in text
