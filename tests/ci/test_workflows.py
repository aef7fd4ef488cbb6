"""The pipeline as code (.github/): linted by the real linters (each shown failing on a broken
copy), and consistent with the Makefile, the Dockerfiles and the promotion script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.ci.conftest import CI_TOOLS, ROOT, WORKFLOWS, actionlint, load_workflow, tool

FILES = sorted(WORKFLOWS.glob("*.yml"))
PINNED_USES = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_name, step)
        for job_name, job in workflow["jobs"].items()
        for step in job.get("steps", [])
    ]


def makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, name
    return match.group(1).strip()


def test_there_are_workflows_for_pull_requests_main_and_promotion() -> None:
    assert {f.name for f in FILES} == {"ci.yml", "release.yml", "promote.yml"}
    assert "pull_request" in load_workflow("ci.yml")["on"]
    assert load_workflow("release.yml")["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in load_workflow("promote.yml")["on"]


# ---------------------------------------------------------------- the linters themselves


def test_actionlint_passes_the_workflows() -> None:
    result = actionlint(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(FILES)} workflow file(s), 0 problem(s)" in result.stdout


def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    text = (WORKFLOWS / "ci.yml").read_text()
    broken = tmp_path / "ci.yml"
    # An expression on a matrix that does not exist, and a job needing one that does not exist.
    broken.write_text(
        text.replace("run: bash .ci/run", "run: bash .ci/run ${{ matrix.nothing }}").replace(
            "  audit:\n", "  audit:\n    needs: [no-such-job]\n"
        )
    )
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout
    assert 'property "nothing" is not defined' in result.stdout
    assert "no-such-job" in result.stdout


def test_actionlint_refuses_to_check_nothing() -> None:
    assert actionlint().returncode == 2


def test_zizmor_passes_the_workflows_and_fails_an_injection(tmp_path: Path) -> None:
    zizmor = tool("zizmor")
    ok = subprocess.run(
        [str(zizmor), "--offline", "--min-severity", "low", "--no-progress", str(WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    text = (WORKFLOWS / "promote.yml").read_text()
    # A pull request title interpolated into a shell script: code injection.
    (folder / "promote.yml").write_text(
        text.replace(
            '[ "$FROM" != "$TO" ]',
            'echo "${{ github.event.pull_request.title }}"; [ "$FROM" != "$TO" ]',
        ).replace("on:\n  push:", "on:\n  pull_request_target:\n  push:")
    )
    bad = subprocess.run(
        [str(zizmor), "--offline", "--min-severity", "low", "--no-progress", str(folder)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "template-injection" in bad.stdout


def test_renovate_config_validates_and_names_only_known_options(tmp_path: Path) -> None:
    check = tool("check-jsonschema")
    config = ROOT / ".github" / "renovate.json"
    schema_run = [str(check), "--builtin-schema", "vendor.renovate"]
    result = subprocess.run([*schema_run, str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # The vendored schema does not forbid unknown keys: check every key we use is a Renovate
    # option (each option is a definition of the schema), so a typo cannot pass silently.
    schema_path = next(
        CI_TOOLS.glob(
            "lib/python*/site-packages/check_jsonschema/builtin_schemas/vendor/renovate.json"
        )
    )
    options = set(json.loads(schema_path.read_text())["definitions"]) | {"$schema"}
    doc = json.loads(config.read_text())

    def keys(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                found.add(key)
                if key not in {"vulnerabilityAlerts"} or isinstance(value, dict):
                    found |= keys(value)
        elif isinstance(node, list):
            for item in node:
                found |= keys(item)
        return found

    unknown = keys(doc) - options
    assert not unknown, f"not Renovate options: {sorted(unknown)}"
    # And a wrong type fails the schema itself.
    broken = tmp_path / "renovate.json"
    broken.write_text(json.dumps({**doc, "prConcurrentLimit": "ten"}))
    result = subprocess.run([*schema_run, str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


# ---------------------------------------------------------------- pinning


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    uses = 0
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not match:
            continue
        ref, rest = match.groups()
        if ref.startswith("./"):
            continue  # a workflow of this repository, at this commit
        uses += 1
        assert PINNED_USES.match(ref), f"{path.name}: {ref} is not pinned to a commit SHA"
        assert VERSION_COMMENT.search(rest), f"{path.name}: {ref} lacks its `# vX.Y.Z` comment"
    assert uses > 0


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    seen: dict[str, set[str]] = {}
    for path in FILES:
        for ref in re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text()):
            seen.setdefault(ref[0], set()).add(ref[1])
    assert seen
    assert {action: shas for action, shas in seen.items() if len(shas) > 1} == {}


def test_tools_the_workflows_install_are_pinned_and_renovate_tracks_them() -> None:
    release = load_workflow("release.yml")
    for name in ("BUILDX_VERSION", "TRIVY_VERSION", "COSIGN_VERSION"):
        assert EXACT_VERSION.match(release["env"][name]), name
    for job, step in steps(release):
        with_ = step.get("with", {})
        if "setup-buildx-action" in step.get("uses", ""):
            assert with_["version"] == "${{ env.BUILDX_VERSION }}", job
        if "trivy-action" in step.get("uses", ""):
            assert with_["version"] == "${{ env.TRIVY_VERSION }}", job
        if "cosign-installer" in step.get("uses", ""):
            assert with_["cosign-release"] == "${{ env.COSIGN_VERSION }}", job
    ci = load_workflow("ci.yml")
    for _, step in steps(ci):
        for key in ("node-version", "version"):
            if key in step.get("with", {}):
                assert EXACT_VERSION.match(step["with"][key]), step
    # Renovate's regex manager (renovate.json) finds each annotated version, in the Makefile too.
    config = json.loads((ROOT / ".github" / "renovate.json").read_text())
    (manager,) = [m for m in config["customManagers"] if "/^Makefile$/" in m["managerFilePatterns"]]
    pattern = re.compile(manager["matchStrings"][0].replace("(?<", "(?P<"))
    found = {
        m.group("depName"): m.group("currentValue")
        for path in [ROOT / "Makefile", *FILES]
        for m in pattern.finditer(path.read_text())
    }
    assert found["uv"] == makefile_var("UV_VERSION")
    assert found["@bufbuild/buf"] == makefile_var("BUF_VERSION")
    assert found["docker/buildx"] == release["env"]["BUILDX_VERSION"]
    assert found["aquasecurity/trivy"] == release["env"]["TRIVY_VERSION"]
    assert found["sigstore/cosign"] == release["env"]["COSIGN_VERSION"]
    assert {"node", "kubernetes/kubernetes"} <= found.keys()


def test_the_dockerfiles_uv_is_the_makefiles_uv() -> None:
    for dockerfile in makefile_var("DOCKERFILES").split():
        text = (ROOT / dockerfile).read_text()
        assert f"ghcr.io/astral-sh/uv:{makefile_var('UV_VERSION')} " in text, dockerfile


# ---------------------------------------------------------------- what the pipeline does


def test_release_builds_every_dockerfile_for_both_architectures(promote: ModuleType) -> None:
    build = load_workflow("release.yml")["jobs"]["build"]
    matrix = build["strategy"]["matrix"]
    dockerfiles = {i["image"]: i["dockerfile"] for i in matrix["include"] if "dockerfile" in i}
    assert matrix["image"] == list(promote.IMAGES)
    assert set(dockerfiles.values()) == set(makefile_var("DOCKERFILES").split())
    assert set(dockerfiles) == set(promote.IMAGES)
    # services/Dockerfile builds the service its SERVICE argument names: the image's name.
    services = {i for i, path in dockerfiles.items() if path == "services/Dockerfile"}
    assert services == {"users", "auth", "audit"}
    assert matrix["platform"] == ["linux/amd64", "linux/arm64"]
    runners = {i["platform"]: i["runner"] for i in matrix["include"] if "runner" in i}
    assert runners == {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}
    (push,) = [s for s in build["steps"] if "build-push-action" in s.get("uses", "")]
    assert "SERVICE=${{ matrix.image }}" in push["with"]["build-args"].splitlines()
    assert push["with"]["provenance"] == "mode=max"
    assert push["with"]["sbom"] is True
    assert "push-by-digest=true" in push["with"]["outputs"]
    assert "cache-from" not in push["with"], "release images are built without a cache"
    assert build["needs"] == "test"


def test_publish_scans_both_platforms_then_signs_the_digest() -> None:
    publish = load_workflow("release.yml")["jobs"]["publish"]
    names = [s.get("name", s.get("uses", "")) for s in publish["steps"]]
    scans = [s for s in publish["steps"] if "trivy-action" in s.get("uses", "")]
    assert {s["env"]["TRIVY_PLATFORM"] for s in scans} == {"linux/amd64", "linux/arm64"}
    for scan in scans:
        assert scan["with"]["severity"] == "CRITICAL"
        assert scan["with"]["ignore-unfixed"] is True  # fixable only
        assert scan["with"]["exit-code"] == "1"
        assert scan["with"]["image-ref"] == "${{ steps.index.outputs.ref }}"
    sign = next(i for i, n in enumerate(names) if n.startswith("sign"))
    assert all(names.index(s["name"]) < sign for s in scans), "scan before signing"
    script = publish["steps"][sign]["run"]
    assert 'cosign sign --yes "$REF"' in script
    assert "cosign verify" in script
    assert publish["permissions"]["id-token"] == "write"


def test_promotion_needs_the_signed_images_and_moves_dev_by_commit_staging_by_pr() -> None:
    jobs = load_workflow("release.yml")["jobs"]
    assert jobs["promote"]["needs"] == "publish"
    assert jobs["publish"]["needs"] == "build"
    runs = "\n".join(s.get("run", "") for s in jobs["promote"]["steps"])
    assert "promote.py set --overlay dev" in runs
    assert "commit-promotion.sh dev" in runs
    assert "promote.py copy --from dev --to staging" in runs
    (pr,) = [s for s in jobs["promote"]["steps"] if "create-pull-request" in s.get("uses", "")]
    assert pr["with"]["add-paths"] == "k8s/overlays/staging/kustomization.yaml"
    promote = load_workflow("promote.yml")
    assert promote["on"]["push"]["paths"] == ["k8s/overlays/staging/kustomization.yaml"]
    assert promote["jobs"]["propose"]["env"]["TO"] == "${{ inputs.to || 'prod' }}"


def test_permissions_are_granted_per_job_and_only_where_needed() -> None:
    writes: dict[str, set[str]] = {}
    for path in FILES:
        workflow = load_workflow(path.name)
        assert workflow["permissions"] == {}, f"{path.name}: default token permissions"
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions")
            assert granted is not None, f"{path.name}: {name} has no permissions block"
            for scope, level in granted.items():
                if level == "write":
                    writes.setdefault(scope, set()).add(f"{path.stem}.{name}")
    assert writes == {
        "packages": {"release.build", "release.publish"},
        "id-token": {"release.publish"},
        "contents": {"release.promote", "promote.propose"},
        "pull-requests": {"release.promote", "promote.propose"},
    }


def test_pull_requests_run_make_test_through_the_ci_entry_point() -> None:
    ci = load_workflow("ci.yml")
    runs = [s.get("run", "") for _, s in steps(ci)]
    assert "bash .ci/run" in runs
    assert "make audit" in runs
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    test_target = re.search(r"^test: (.+?) ##", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert test_target
    assert "ci-check" in test_target.group(1).split()


def test_shellcheck_passes_the_scripts_and_fails_a_bad_one(tmp_path: Path) -> None:
    shellcheck = tool("shellcheck")
    scripts = sorted((ROOT / ".github" / "scripts").glob("*.sh"))
    assert scripts
    ok = subprocess.run([str(shellcheck), *map(str, scripts)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    bad = tmp_path / "bad.sh"
    shutil.copy(scripts[0], bad)
    bad.write_text(bad.read_text() + "\nrm -rf $UNQUOTED/\n")
    result = subprocess.run([str(shellcheck), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "SC2086" in result.stdout
