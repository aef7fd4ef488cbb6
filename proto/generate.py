"""Generate Python code from Portico's protos: the one code-generation entry point (`make proto`).

Writes into ``proto/gen/`` (emptied first, committed, never edited by hand):

* ``portico/**/*_pb2.py``, ``*_pb2_grpc.py`` and typed ``.pyi`` stubs (mypy-protobuf);
* ``buf/validate/validate_pb2.py``: the protovalidate rules our protos import. PyPI
  ``protovalidate`` embeds that file's descriptor but ships no ``.proto`` and no importable
  ``_pb2``, so we rebuild it from the embedded descriptor (:func:`validate_descriptor`);
* ``portico/source_info.binpb``: a ``FileDescriptorSet`` of our own files *with* source info, from
  which the gateway reads the proto comments for its OpenAPI descriptions;
* ``image.binpb`` (git-ignored): a buf image (all imports, source info) for ``buf lint`` and
  ``buf format``, because buf cannot fetch BSR dependencies on these machines.

Everything runs through the locked ``grpcio-tools``, so the output is a function of ``uv.lock``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parent
GEN = PROTO_ROOT / "gen"
IMAGE = PROTO_ROOT / "image.binpb"
VALIDATE_PROTO = "buf/validate/validate.proto"


def validate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Return ``buf/validate/validate.proto`` as embedded in the installed protovalidate.

    This reads a private module of protovalidate 2.x; ``tests/unit/proto`` checks it still works.
    """
    from protovalidate._gen.buf.validate import validate_pb

    return descriptor_pb2.FileDescriptorProto.FromString(validate_pb._DESC.proto.to_binary())


def our_protos() -> list[str]:
    return sorted(
        p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "portico").rglob("*.proto")
    )


def include_dirs() -> list[Path]:
    from google.api import (
        annotations_pb2,
    )  # googleapis-common-protos ships google/{api,rpc}/*.proto

    googleapis = Path(annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [PROTO_ROOT, googleapis, well_known]


def protoc(args: list[str], *, deps: Path) -> None:
    from grpc_tools import protoc as _protoc

    bindir = Path(sys.executable).parent
    argv = [
        "grpc_tools.protoc",
        f"--descriptor_set_in={deps}",
        *(f"-I{d}" for d in include_dirs()),
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        *args,
    ]
    if _protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


def generate(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "portico").mkdir(parents=True)
    files = our_protos()
    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp) / "validate.binpb"
        deps.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=[validate_descriptor()]).SerializeToString()
        )
        protoc(
            [
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out=quiet:{out}",
                f"--mypy_grpc_out=quiet:{out}",
                *files,
                VALIDATE_PROTO,
            ],
            deps=deps,
        )
        protoc(
            [
                f"--descriptor_set_out={out / 'portico' / 'source_info.binpb'}",
                "--include_source_info",
                *files,
            ],
            deps=deps,
        )
        protoc(
            [f"--descriptor_set_out={IMAGE}", "--include_source_info", "--include_imports", *files],
            deps=deps,
        )
    for directory in [out / "portico", out / "buf", *(p for p in out.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (out / "portico" / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=GEN, help="output directory (default: proto/gen)"
    )
    args = parser.parse_args()
    generate(args.out)
    print(f"generated {len(our_protos())} proto file(s) into {args.out}")


if __name__ == "__main__":
    main()
