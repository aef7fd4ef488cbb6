"""API compatibility gate: Portico's protos against the last release's (`make proto-breaking`).

Two checks, both against a buf image of the released protos, ``proto/baseline.binpb``
(committed; ``make proto-baseline`` writes it when a release is cut, docs/api-versioning.md):

* **gRPC and the wire**: ``buf breaking`` with the ``FILE`` rules of ``proto/buf.yaml``
  (a deleted or renumbered field, a changed type, a removed RPC, a renamed package or JSON name);
* **REST**: every HTTP binding (``google.api.http``: verb, path template, body) the baseline
  serves is still served by the same RPC, because the gateway derives its routes from those
  annotations and ``buf breaking`` does not look at options.

``--against-ref REF`` checks against the protos of a git commit instead (e.g. the merge base of
a branch: ``--against-ref "$(git merge-base HEAD origin/main)"``), read with ``git archive``;
``--proto-root DIR`` checks another tree (tests use it for deliberately broken copies).

Images are built by ``grpc_tools.protoc`` with generate.py's include paths (buf cannot fetch
BSR dependencies on our machines) and compared by the buf binary ``make lint`` installs.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
BASELINE = PROTO_ROOT / "baseline.binpb"
BUF = Path(os.environ.get("BUF", REPO / ".tools" / "node_modules" / ".bin" / "buf")).resolve()
HTTP_VERBS = ("get", "put", "post", "delete", "patch")


def _generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "portico_proto_generate", PROTO_ROOT / "generate.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit("proto/generate.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_image(proto_root: Path, out: Path, *, source_info: bool) -> None:
    """A buf image (a FileDescriptorSet with imports) of ``proto_root/portico/**.proto``."""
    gen = _generate()
    files = sorted(
        p.relative_to(proto_root).as_posix() for p in proto_root.glob("portico/**/*.proto")
    )
    if not files:
        raise SystemExit(f"no protos under {proto_root}/portico")
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp) / "validate.binpb"
        deps.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=[gen.validate_descriptor()]).SerializeToString()
        )
        includes = [proto_root, *gen.include_dirs()[1:]]
        argv = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={deps}",
            *(f"-I{d}" for d in includes),
            f"--descriptor_set_out={out}",
            "--include_imports",
            *(["--include_source_info"] if source_info else []),
            *files,
        ]
        if protoc.main(argv) != 0:
            raise SystemExit(f"protoc failed on {proto_root}")


def image_of_ref(ref: str, out: Path) -> None:
    """Build the image of the protos at git commit ``ref`` (offline: ``git archive``)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "proto/portico"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(f"git archive {ref}: {archive.stderr.decode().strip()}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar,
    ):
        tar.extractall(tmp, filter="data")
        build_image(Path(tmp) / "proto", out, source_info=False)


def http_bindings(image: Path) -> dict[str, tuple[str, str, str]]:
    """``{package.Service.Method: (verb, path, body)}`` for every Portico RPC with an HTTP rule."""
    # Importing annotations_pb2 registers the google.api.http extension, so parsing the
    # MethodOptions below decodes it.
    extension = annotations_pb2.http
    fds = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
    bindings: dict[str, tuple[str, str, str]] = {}
    for file in fds.file:
        if not file.name.startswith("portico/"):
            continue
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(extension):
                    continue
                rule = method.options.Extensions[extension]
                verb = rule.WhichOneof("pattern") or ""
                path = getattr(rule, verb) if verb in HTTP_VERBS else ""
                key = f"{file.package}.{service.name}.{method.name}"
                bindings[key] = (verb.upper(), path, rule.body)
    return bindings


def rest_breaks(current: Path, against: Path) -> list[str]:
    now = http_bindings(current)
    problems = []
    for method, (verb, path, body) in sorted(http_bindings(against).items()):
        if method not in now:
            continue  # a removed RPC: buf breaking reports it (RPC_NO_DELETE)
        if now[method] != (verb, path, body):
            new_verb, new_path, new_body = now[method]
            problems.append(
                f"REST: {method} was {verb} {path} (body {body!r}), is {new_verb} {new_path} "
                f"(body {new_body!r}): existing REST clients break"
            )
    return problems


def _annotation(line: str) -> str:
    """One ``buf breaking --error-format json`` line as ``path:line:col: [RULE] message``."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError:
        return line
    where = f"{item.get('path', '?')}:{item.get('start_line', 0)}:{item.get('start_column', 0)}"
    return f"{where}: [{item.get('type', '?')}] {item.get('message', '')}"


def check(current_root: Path, against: Path) -> int:
    if not BUF.exists():
        print(f"{BUF} is missing: run `make lint` (it installs buf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "current.binpb"
        build_image(current_root, current, source_info=True)
        result = subprocess.run(
            [
                str(BUF), "breaking", str(current), "--against", str(against),
                "--exclude-imports", "--config", str(PROTO_ROOT / "buf.yaml"),
                "--error-format", "json",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=current_root,
        )  # fmt: skip
        grpc = [_annotation(line) for line in result.stdout.splitlines() if line.strip()]
        rest = rest_breaks(current, against)
    if result.stderr.strip():
        print(result.stderr.strip(), file=sys.stderr)
    for line in grpc:
        print(line)
    for line in rest:
        print(line)
    if result.returncode not in (0, 100):
        print(f"buf breaking failed to run (exit {result.returncode})", file=sys.stderr)
        return 2
    if result.returncode == 100 or rest:
        print(
            "breaking change against the last release's protos: add a new version side by side "
            "instead (docs/api-versioning.md)",
            file=sys.stderr,
        )
        return 1
    print(f"no breaking change against {against.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="fail on a breaking change (exit 1)")
    p_check.add_argument("--against", type=Path, default=BASELINE, help="a buf image")
    p_check.add_argument("--against-ref", help="a git commit whose protos to check against")
    p_check.add_argument("--proto-root", type=Path, default=PROTO_ROOT, help="protos to check")
    p_base = sub.add_parser("baseline", help=f"write {BASELINE.name} (when a release is cut)")
    p_base.add_argument("--ref", help="build it from a git commit's protos (default: the tree)")
    args = parser.parse_args(argv)
    if args.command == "baseline":
        if args.ref:
            image_of_ref(args.ref, BASELINE)
        else:
            build_image(PROTO_ROOT, BASELINE, source_info=False)
        print(f"wrote {BASELINE.relative_to(REPO)} ({len(http_bindings(BASELINE))} REST bindings)")
        return 0
    if args.against_ref:
        with tempfile.TemporaryDirectory() as tmp:
            against = Path(tmp) / "against.binpb"
            image_of_ref(args.against_ref, against)
            return check(args.proto_root.resolve(), against)
    if not args.against.exists():
        print(f"{args.against} is missing: `make proto-baseline` writes it", file=sys.stderr)
        return 2
    return check(args.proto_root.resolve(), args.against.resolve())


if __name__ == "__main__":
    sys.exit(main())
