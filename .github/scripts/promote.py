"""GitOps promotion: pin Portico's images by digest in an overlay's ``images:`` block.

A release is a commit that changes ``k8s/overlays/<env>/kustomization.yaml``; Argo CD syncs it.
The pipeline (``.github/workflows/release.yml``) calls this script twice per build on main:

* ``set``: pin the digests it just built, scanned and signed into the **dev** overlay
  (committed to main by the pipeline);
* ``copy``: copy one overlay's pins into the next (dev → staging, staging → prod), on a branch
  that becomes a pull request: staging and prod move only by a reviewed merge.

The ``images:`` block is written by this script, never by hand: it is rewritten whole (one entry
per image, sorted, ``newName`` + ``digest``), and everything else in the file is left byte for
byte as it was. Kustomize's own ``kustomize edit set image`` would do the same, but it is a Go
binary no package registry we may use ships; the YAML is read with PyYAML to check the result.

    python .github/scripts/promote.py set --overlay dev --registry ghcr.io/acme \\
        gateway=sha256:... users=sha256:...
    python .github/scripts/promote.py copy --from dev --to staging
    python .github/scripts/promote.py show --overlay prod
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
#: The images the pipeline builds, by the name the base manifests use (``portico/<image>``).
IMAGES = ("gateway", "users", "auth", "audit", "migrations")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: An OCI registry host with an optional path (``ghcr.io/acme``, ``registry:5000/team``).
REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
HEADER = "images:\n"
COMMENT = "  # Written by .github/scripts/promote.py (the release pipeline): pinned by digest.\n"


class PromotionError(Exception):
    """A promotion that must not be written (bad digest, unknown image, missing overlay)."""


def kustomization(overlay: str, root: Path = ROOT) -> Path:
    path = root / "k8s" / "overlays" / overlay / "kustomization.yaml"
    if not path.is_file():
        raise PromotionError(f"no overlay {overlay!r}: {path} does not exist")
    return path


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """``{image: (newName, digest)}`` of the overlay's Portico images (digest '' when unpinned)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    pins: dict[str, tuple[str, str]] = {}
    for entry in doc.get("images") or []:
        name = str(entry.get("name", ""))
        if name.startswith("portico/") and name.removeprefix("portico/") in IMAGES:
            pins[name.removeprefix("portico/")] = (
                str(entry.get("newName", name)),
                str(entry.get("digest", "")),
            )
    return pins


def render_block(pins: dict[str, tuple[str, str]]) -> str:
    lines = [HEADER, COMMENT]
    for image in sorted(pins):
        new_name, digest = pins[image]
        lines += [
            f"  - name: portico/{image}\n",
            f"    newName: {new_name}\n",
            f'    digest: "{digest}"\n',
        ]
    return "".join(lines)


def replace_block(text: str, block: str) -> str:
    """Swap the top-level ``images:`` block (or append one) and keep every other line as is."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "images:"), None)
    if start is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + block
    end = start + 1
    # The block ends at the next top-level key; indented lines and blank lines belong to it.
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def write_pins(path: Path, pins: dict[str, tuple[str, str]]) -> None:
    for image, (new_name, digest) in pins.items():
        if image not in IMAGES:
            raise PromotionError(f"unknown image {image!r} (known: {', '.join(IMAGES)})")
        if not DIGEST.match(digest):
            raise PromotionError(f"{image}: {digest!r} is not a sha256 digest")
        if not new_name.endswith(f"/portico/{image}"):
            raise PromotionError(f"{image}: {new_name!r} does not name portico/{image}")
    updated = replace_block(path.read_text(), render_block(pins))
    # The result must still be one YAML document that reads back to exactly these pins.
    if read_pins_from_text(updated) != pins:
        raise PromotionError(f"{path}: rewriting the images block did not read back")
    path.write_text(updated)


def read_pins_from_text(text: str) -> dict[str, tuple[str, str]]:
    doc: dict[str, Any] = yaml.safe_load(text) or {}
    return {
        str(e["name"]).removeprefix("portico/"): (str(e["newName"]), str(e["digest"]))
        for e in doc.get("images") or []
    }


def parse_assignments(values: list[str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for value in values:
        image, sep, digest = value.partition("=")
        if not sep:
            raise PromotionError(f"{value!r}: expected IMAGE=sha256:DIGEST")
        digests[image] = digest
    return digests


def cmd_set(overlay: str, registry: str, assignments: list[str], root: Path) -> str:
    if not REGISTRY.match(registry):
        raise PromotionError(f"{registry!r} is not a registry (host[:port][/path], lowercase)")
    path = kustomization(overlay, root)
    digests = parse_assignments(assignments)
    pins = read_pins(path)
    for image, digest in digests.items():
        pins[image] = (f"{registry}/portico/{image}", digest)
    missing = sorted(set(IMAGES) - pins.keys())
    if missing:
        raise PromotionError(f"{overlay}: no digest for {', '.join(missing)}")
    write_pins(path, pins)
    return summary(overlay, pins)


def cmd_copy(source: str, target: str, root: Path) -> str:
    pins = read_pins(kustomization(source, root))
    missing = sorted(image for image in IMAGES if not DIGEST.match(pins.get(image, ("", ""))[1]))
    if missing:
        raise PromotionError(
            f"{source} pins no digest for {', '.join(missing)}: nothing to promote"
        )
    write_pins(kustomization(target, root), pins)
    return summary(target, pins)


def summary(overlay: str, pins: dict[str, tuple[str, str]]) -> str:
    return "\n".join(f"{overlay}: {name}@{digest}" for name, digest in sorted(pins.values()))


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_set = sub.add_parser("set", help="pin new digests in one overlay")
    p_set.add_argument("--overlay", required=True, help="dev, staging or prod")
    p_set.add_argument(
        "--registry", required=True, help="e.g. ghcr.io/acme (images: <it>/portico/X)"
    )
    p_set.add_argument("digests", nargs="+", metavar="IMAGE=sha256:DIGEST")
    p_copy = sub.add_parser("copy", help="copy one overlay's pins into another (promotion)")
    p_copy.add_argument("--from", dest="source", required=True)
    p_copy.add_argument("--to", dest="target", required=True)
    p_show = sub.add_parser("show", help="print an overlay's pins")
    p_show.add_argument("--overlay", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "set":
            out = cmd_set(args.overlay, args.registry, args.digests, root)
        elif args.command == "copy":
            out = cmd_copy(args.source, args.target, root)
        else:
            out = summary(args.overlay, read_pins(kustomization(args.overlay, root)))
    except PromotionError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
