"""The five images: how their Dockerfiles are built (the three services' from one, with a stage a
service), and that every image a cluster runs is either
one of them (a skaffold artifact) or a pinned upstream image.

The Dockerfiles are checked as text here (hadolint and checkov lint them in ``make k8s-check``);
``make images`` (k8s/tools/images.sh, run by ``make test``) builds them with podman, measures each
image against the < 100 MB promise and starts it (docs/kubernetes.md, "Images").
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.k8s.conftest import ROOT, Manifest, yaml_to_json

#: Image (skaffold artifact) -> Dockerfile, package, and the console script it runs.
IMAGES = {
    "portico/gateway": ("gateway/Dockerfile", "portico-gateway", "portico-gateway"),
    "portico/users": ("services/Dockerfile", "portico-users", "portico-users"),
    "portico/auth": ("services/Dockerfile", "portico-auth", "portico-auth"),
    "portico/audit": ("services/Dockerfile", "portico-audit", "portico-audit"),
    "portico/migrations": ("migrations/Dockerfile", "portico-migrations", "portico-migrate"),
}
#: The images built from services/Dockerfile -> the SERVICE build argument each is built with.
SERVICES = {"portico/users": "users", "portico/auth": "auth", "portico/audit": "audit"}
#: The runtime base: users, CA bundle and tzdata only; the Python runtime (Debian 12's CPython 3.11,
#: the minor version of .python-version and uv.lock) comes from the build stage.
RUNTIME_BASE = "gcr.io/distroless/static-debian12:nonroot"
#: The script the build stage assembles the runtime with (sent in the build context).
RUNTIME_SCRIPT = "images/python-runtime.sh"
#: Upstream images the overlays may run, each pinned to a version (never latest).
UPSTREAM = re.compile(r"^(valkey/valkey|oliver006/redis_exporter):v?\d[\w.-]*$")
#: Istio gateway injection replaces `image: auto` with the control plane's proxy image.
INJECTED = "auto"
#: Kinds whose pods run containers (a Rollout may instead point at a Deployment: workloadRef).
POD_KINDS = ("Deployment", "StatefulSet", "Job", "Rollout", "CronJob", "DaemonSet")


def build_args(image: str) -> dict[str, str]:
    """The build arguments ``image`` needs (skaffold, compose, the release and ``make images``
    pass them)."""
    return {"SERVICE": SERVICES[image]} if image in SERVICES else {}


def dockerfile(image: str) -> str:
    """The Dockerfile of ``image`` as its build reads it: ``${SERVICE}`` expanded, and of
    services/Dockerfile only the stages this image is made of (not the other services')."""
    text = (ROOT / IMAGES[image][0]).read_text()
    service = SERVICES.get(image)
    if service is None:
        return text
    blocks = re.split(r"(?m)^(?=FROM )", text)
    others = [b for b in blocks if re.match(rf"FROM runtime AS (?!{service}$)\S+$", b, re.M)]
    assert len(others) == len(SERVICES) - 1, "a stage a service, named after it"
    return "".join(b for b in blocks if b not in others).replace("${SERVICE}", service)


def stages(text: str) -> list[tuple[str, str]]:
    """``(base, name)`` of every ``FROM base AS name``."""
    return re.findall(r"^FROM (\S+) AS (\S+)$", text, re.MULTILINE)


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_every_dockerfile_is_a_skaffold_artifact_built_from_the_root() -> None:
    (config,) = yaml_to_json((ROOT / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert artifacts.keys() == IMAGES.keys()
    for name, (path, _, _) in IMAGES.items():
        assert artifacts[name]["context"] == "."
        assert artifacts[name]["docker"]["dockerfile"] == path
        assert artifacts[name]["docker"].get("buildArgs", {}) == build_args(name)
    found = {
        str(p.relative_to(ROOT)) for p in ROOT.glob("**/Dockerfile") if ".tools" not in p.parts
    }
    assert found == {path for path, _, _ in IMAGES.values()}, "a Dockerfile skaffold does not build"


def test_multi_stage_on_distroless_with_the_same_python(image: str) -> None:
    text = dockerfile(image)
    service = [("runtime", SERVICES[image])] if image in SERVICES else []
    assert stages(text) == [
        (RUNTIME_BASE, "base"),
        ("debian:bookworm-slim", "build"),
        ("base", "runtime"),
        *service,
    ], "runtime = distroless static-debian12; build = the Debian 12 its Python comes from"
    if image in SERVICES:  # the image is the service's stage, chosen by the build argument
        assert text.rstrip().endswith(f"\nFROM {SERVICES[image]}")
    # The venv is made for the interpreter the runtime gets, at the same path.
    assert "UV_PYTHON=/usr/bin/python3.11" in text
    assert "install -y --no-install-recommends python3.11 binutils" in text
    assert "UV_PYTHON_DOWNLOADS=never" in text
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def test_built_from_the_lock_without_dev_dependencies(image: str) -> None:
    text = dockerfile(image)
    package = IMAGES[image][1]
    syncs = [line.replace('"', "") for line in re.findall(r"uv sync (.*)", text)]
    assert syncs == [
        f"--frozen --no-install-workspace --package {package} --no-dev --no-editable",
        f"--frozen --package {package} --no-dev --no-editable \\",
    ]
    assert "--mount=type=cache,target=/root/.cache/uv" in text, "uv's cache stays out of layers"
    # uv compiles nothing: the runtime script compiles the venv, sourceless.
    assert "UV_COMPILE_BYTECODE=0" in text
    (assemble,) = re.findall(rf"&& {RUNTIME_SCRIPT} (.*)$", text, re.MULTILINE)
    assert assemble == "/runtime /app/.venv"


def test_the_runtime_script_strips_compiles_and_copies_only_what_loads() -> None:
    script = (ROOT / RUNTIME_SCRIPT).read_text()
    # Debug symbols, stubs and extension sources are build-only weight.
    assert "strip --strip-unneeded" in script
    for suffix in ("pyi", "pyx", "pxd", "c", "h"):
        assert f"-name '*.{suffix}'" in script
    # Bytecode at build (the root fs is read-only), reproducible, legacy layout, sources dropped.
    assert "compileall -q -b -j 0 --invalidation-mode unchecked-hash" in script
    assert "-name '*.py' ! -type d -delete" in script
    assert "python311.zip" in script, "the stdlib is a zip of bytecode (sys.path[0])"
    # Shared libraries: the ldd closure, failing on any that is not found.
    assert 'ldd "${elves[@]}"' in script
    assert "/not found/" in script
    assert (ROOT / RUNTIME_SCRIPT).stat().st_mode & 0o111, "executable: the Dockerfiles run it"


def test_runtime_stage_is_minimal_and_non_root(image: str) -> None:
    text = dockerfile(image)
    runtime = text[text.index("FROM base AS runtime") :]
    assert "RUN " not in runtime, "no shell in distroless: nothing runs in the runtime stage"
    copies = re.findall(r"^COPY (.*)$", runtime, re.MULTILINE)
    sources = {c.split()[-2] for c in copies}
    allowed = {"/runtime/", "/app/.venv", "/out/etc/group", "/usr/bin/sleep", "/sql"}
    assert sources <= allowed, f"only runtime, venv (and passwd, sleep, SQL) reach it: {copies}"
    assert "COPY --from=build --chown=0:0 /runtime/ /" in runtime
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in runtime, "the base's CA bundle"
    assert "USER 10001:10001" in runtime
    assert "portico:x:10001:10001:" in text, "the numeric user has a passwd entry"
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    script = IMAGES[image][2]
    assert f'ENTRYPOINT ["/app/.venv/bin/{script}"]' in runtime, "absolute path: no shell, no PATH"
    for label in ("title", "description", "source", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{label}=" in runtime


def test_sleep_only_where_a_pre_stop_hook_runs_it(image: str) -> None:
    has_sleep = "/usr/bin/sleep" in dockerfile(image)
    assert has_sleep == (image != "portico/migrations"), "Deployments run `sleep 5` at preStop"


def test_healthcheck_only_where_it_makes_sense(image: str) -> None:
    text = dockerfile(image)
    if image == "portico/gateway":
        (check,) = re.findall(r"^HEALTHCHECK .*\n\s+CMD (.*)$", text, re.MULTILINE)
        assert check.startswith('["/app/.venv/bin/python"'), "exec form: distroless has no shell"
        assert "/healthz" in check
    else:
        assert "HEALTHCHECK" not in text.replace("No HEALTHCHECK", "")
        # checkov's CKV_DOCKER_2 is skipped with a reason, never silently.
        (skip,) = re.findall(r"^# checkov:skip=CKV_DOCKER_2: (.+)$", text, re.MULTILINE)
        assert len(skip) > 20


def test_compose_and_make_images_build_each_service_with_its_service_argument() -> None:
    (compose,) = yaml_to_json((ROOT / "docker-compose.yaml").read_text())
    built = {
        spec["image"].partition(":")[0]: spec["build"]
        for spec in compose["services"].values()
        if "build" in spec
    }
    assert built.keys() == IMAGES.keys()
    for image, build in built.items():
        assert (build["context"], build["dockerfile"]) == (".", IMAGES[image][0])
        assert build.get("args", {}) == build_args(image)
    # make images (k8s/tools/images.sh) builds every image with SERVICE=<its name>.
    script = (ROOT / "k8s/tools/images.sh").read_text()
    assert '--build-arg "SERVICE=$image"' in script
    for image in SERVICES:
        assert f"[{image.removeprefix('portico/')}]={IMAGES[image][0]}" in script


def test_dockerignore_sends_what_uv_needs_and_nothing_else() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "**", "allow-list: everything is excluded first"
    for needed in ("!uv.lock", "!pyproject.toml", "!.python-version", "!proto/gen/"):
        assert needed in rules
    assert f"!{RUNTIME_SCRIPT}" in rules, "the build stage runs it"
    for path, _, _ in IMAGES.values():
        assert f"!{path}" not in rules, "Dockerfiles are read by the builder, not sent"


def _containers(workload: Manifest) -> list[dict[str, Any]]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    if template is None:  # a Rollout with workloadRef: its Deployment carries the pods
        return []
    pod = template["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_every_image_is_a_skaffold_artifact_or_a_pinned_upstream(
    docs: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    dev = docs is rendered["dev"]
    checked = 0
    for workload in (d for d in docs if d["kind"] in POD_KINDS):
        for container in _containers(workload):
            image: str = container["image"]
            checked += 1
            if UPSTREAM.match(image) or image == INJECTED:
                continue
            name, _, digest = image.partition("@")
            # Overlays rename (registry prefix): the last two path segments name the artifact.
            assert "/".join(name.split("/")[-2:]) in IMAGES, (
                f"{workload['metadata']['name']}: {image}"
            )
            if not dev:  # dev runs what skaffold built, or what the pipeline promoted
                # staging and prod run exactly what was promoted: a digest, never a tag
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image}: not by digest"
    assert checked >= 4
