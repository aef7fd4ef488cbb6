"""Render a CloudNativePG Cluster that restores ``postgres`` to a point in time (PITR).

    .tools/k8s/bin/python k8s/scripts/render-restore.py --overlay prod \
        --target-time "2025-11-22 14:05:00+00" > restore.yaml

It renders the overlay (``kubectl kustomize``), takes its ``postgres`` Cluster and returns a copy
that bootstraps with ``bootstrap.recovery`` from the overlay's object store (base backup + WAL
replayed up to ``recoveryTarget.targetTime``) instead of ``initdb``. The new cluster archives its
own WAL under a new ``serverName`` so it never writes into the archive it restores from.
docs/kubernetes.md ("Restore (point in time)") lists the whole procedure. Needs PyYAML (the
tools venv).
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "origin"


def rendered_cluster(overlay: str) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Cluster" and doc["apiVersion"] == "postgresql.cnpg.io/v1":
            return dict(doc)
    raise SystemExit(f"overlay {overlay} renders no CloudNativePG Cluster")


def restore_cluster(
    cluster: dict[str, Any], *, target_time: str, name: str, server_name: str
) -> dict[str, Any]:
    """The recovery Cluster for ``cluster`` (which must archive to an object store)."""
    spec = copy.deepcopy(cluster["spec"])
    store = spec.get("backup", {}).get("barmanObjectStore")
    if not store:
        raise SystemExit(
            "this Cluster has no spec.backup.barmanObjectStore: nothing to restore from"
        )
    origin = copy.deepcopy({k: v for k, v in store.items() if k not in ("data", "serverName")})
    origin["serverName"] = store.get("serverName", cluster["metadata"]["name"])
    initdb = spec.pop("bootstrap", {}).get("initdb", {})
    spec["bootstrap"] = {
        "recovery": {
            "source": SOURCE,
            "database": initdb.get("database", "portico"),
            "owner": initdb.get("owner", "portico"),
            "recoveryTarget": {"targetTime": target_time},
        }
    }
    spec["externalClusters"] = [{"name": SOURCE, "barmanObjectStore": origin}]
    spec["backup"]["barmanObjectStore"]["serverName"] = server_name
    metadata = {
        "name": name,
        "namespace": cluster["metadata"].get("namespace", "default"),
        "labels": cluster["metadata"].get("labels", {}),
        "annotations": {"portico.dev/restored-to": target_time},
    }
    return {
        "apiVersion": cluster["apiVersion"],
        "kind": "Cluster",
        "metadata": metadata,
        "spec": spec,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", default="prod", help="k8s/overlays/<name> (default prod)")
    parser.add_argument(
        "--target-time",
        required=True,
        help='RFC 3339 / PostgreSQL timestamp with zone, e.g. "2025-11-22 14:05:00+00"',
    )
    parser.add_argument("--name", default="postgres", help="name of the restored Cluster")
    parser.add_argument(
        "--server-name", help="archive name of the restored cluster (default <name>-r<timestamp>)"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(
        r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)", args.target_time
    ):
        parser.error("--target-time needs a date, a time and a zone, e.g. 2025-11-22 14:05:00+00")
    stamp = re.sub(r"\D", "", args.target_time)[:14]
    server_name = args.server_name or f"{args.name}-r{stamp}"
    doc = restore_cluster(
        rendered_cluster(args.overlay),
        target_time=args.target_time,
        name=args.name,
        server_name=server_name,
    )
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
