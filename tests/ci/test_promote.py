"""GitOps promotion (.github/scripts/promote.py): pins land in the overlays, render as
``<registry>/portico/<image>@sha256:...`` in every workload, and nothing else in the file moves.

Each test works on a copy of k8s/, istio/ and observability/ (what the overlays include)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.ci.conftest import ROOT

REGISTRY = "ghcr.io/acme"
POD_KINDS = {"Deployment", "StatefulSet", "Job", "Rollout", "CronJob"}


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for folder in ("k8s", "istio", "observability"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("crds"))
    return tmp_path


def kustomization(repo: Path, overlay: str) -> Path:
    return repo / "k8s" / "overlays" / overlay / "kustomization.yaml"


def portico_images(repo: Path, overlay: str) -> set[str]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required (kustomize is built in)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(repo / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    images: set[str] = set()
    for doc in yaml.safe_load_all(out):
        if not doc or doc["kind"] not in POD_KINDS:
            continue
        template: Any = doc["spec"].get("template") or doc["spec"].get("jobTemplate", {})
        pod = template.get("spec", {})
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            if "/portico/" in container["image"] or container["image"].startswith("portico/"):
                images.add(container["image"])
    return images


def set_all(promote: ModuleType, repo: Path, overlay: str, seed: str) -> int:
    assignments = [f"{image}={digest(seed + image)}" for image in promote.IMAGES]
    code: int = promote.main(
        ["set", "--overlay", overlay, "--registry", REGISTRY, *assignments], root=repo
    )
    return code


@pytest.mark.parametrize("overlay", ["dev", "staging", "prod"])
def test_set_pins_every_workload_by_digest(promote: ModuleType, repo: Path, overlay: str) -> None:
    before = kustomization(repo, overlay).read_text()
    assert set_all(promote, repo, overlay, "r1") == 0
    expected = {f"{REGISTRY}/portico/{i}@{digest('r1' + i)}" for i in promote.IMAGES}
    assert portico_images(repo, overlay) == expected
    # Everything but the images block is byte for byte what it was (comments included).
    after = kustomization(repo, overlay).read_text()
    strip = promote.replace_block
    assert strip(after, "") == strip(before, "")


def test_set_is_idempotent_and_replaces_old_pins(promote: ModuleType, repo: Path) -> None:
    assert set_all(promote, repo, "dev", "r1") == 0
    first = kustomization(repo, "dev").read_text()
    assert set_all(promote, repo, "dev", "r1") == 0
    assert kustomization(repo, "dev").read_text() == first
    assert set_all(promote, repo, "dev", "r2") == 0
    assert portico_images(repo, "dev") == {
        f"{REGISTRY}/portico/{i}@{digest('r2' + i)}" for i in promote.IMAGES
    }
    assert kustomization(repo, "dev").read_text().count("images:") == 1


def test_copy_promotes_exactly_what_the_source_runs(promote: ModuleType, repo: Path) -> None:
    assert set_all(promote, repo, "dev", "r1") == 0
    assert set_all(promote, repo, "staging", "old") == 0
    assert promote.main(["copy", "--from", "dev", "--to", "staging"], root=repo) == 0
    assert portico_images(repo, "staging") == portico_images(repo, "dev")
    assert promote.main(["copy", "--from", "staging", "--to", "prod"], root=repo) == 0
    assert portico_images(repo, "prod") == portico_images(repo, "dev")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gateway=sha256:abc"], "is not a sha256 digest"),
        (["gateway=latest"], "is not a sha256 digest"),
        ([f"frontend={digest('x')}"], "unknown image"),
        (["gateway"], "expected IMAGE=sha256:DIGEST"),
    ],
)
def test_set_rejects_bad_input_and_writes_nothing(
    promote: ModuleType,
    repo: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert set_all(promote, repo, "dev", "r1") == 0
    before = kustomization(repo, "dev").read_text()
    assert promote.main(["set", "--overlay", "dev", "--registry", REGISTRY, *args], root=repo) == 2
    assert message in capsys.readouterr().err
    assert kustomization(repo, "dev").read_text() == before


def test_set_needs_every_image_and_a_registry(
    promote: ModuleType, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_gateway = [f"gateway={digest('g')}"]
    before = kustomization(repo, "dev").read_text()
    if "digest:" not in before:  # an overlay without pins must get all five at once
        assert (
            promote.main(
                ["set", "--overlay", "dev", "--registry", REGISTRY, *only_gateway], root=repo
            )
            == 2
        )
        assert "no digest for" in capsys.readouterr().err
    bad_registry = ["set", "--overlay", "dev", "--registry", "GHCR.io/Acme", *only_gateway]
    assert promote.main(bad_registry, root=repo) == 2
    assert "is not a registry" in capsys.readouterr().err
    assert (
        promote.main(["set", "--overlay", "qa", "--registry", REGISTRY, *only_gateway], root=repo)
        == 2
    )
    assert "no overlay 'qa'" in capsys.readouterr().err


def test_copy_refuses_an_overlay_without_digests(
    promote: ModuleType, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kustomization(repo, "dev")
    path.write_text(promote.replace_block(path.read_text(), ""))
    before = kustomization(repo, "staging").read_text()
    assert promote.main(["copy", "--from", "dev", "--to", "staging"], root=repo) == 2
    assert "nothing to promote" in capsys.readouterr().err
    assert kustomization(repo, "staging").read_text() == before


def test_skaffold_renders_plain_names_after_a_dev_promotion(
    promote: ModuleType, repo: Path
) -> None:
    """skaffold leaves digest references alone: k8s/skaffold resets them for its builds."""
    assert set_all(promote, repo, "dev", "r1") == 0
    out = subprocess.run(
        ["kubectl", "kustomize", str(repo / "k8s" / "skaffold")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    images = {
        c["image"]
        for doc in yaml.safe_load_all(out)
        if doc and doc["kind"] in POD_KINDS
        for c in doc["spec"]["template"]["spec"]["containers"]
        if "portico/" in c["image"]
    }
    assert images == {f"portico/{i}" for i in promote.IMAGES}


def test_the_repository_overlays_pin_digests_the_script_reads(promote: ModuleType) -> None:
    """staging and prod run what a promotion wrote: every Portico image pinned by digest."""
    for overlay in ("staging", "prod"):
        pins = promote.read_pins(kustomization(ROOT, overlay))
        assert set(pins) == set(promote.IMAGES), overlay
        for image, (name, pinned) in pins.items():
            assert promote.DIGEST.match(pinned), f"{overlay}: {image} is not pinned by digest"
            assert name.endswith(f"/portico/{image}")
