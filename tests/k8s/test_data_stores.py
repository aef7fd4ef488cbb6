"""Least privilege in the data stores as deployed: manifests, migrations and code agree.

Each service logs in to PostgreSQL as its own CloudNativePG managed role, a member of the group
role its migrations grant its own tables to, with the password of a Secret that both the
Deployment and the operator read; only the migration Job uses the owner (docs/data-stores.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from portico_devstack.roles import SERVICES, group_role, login_role
from tests.k8s.conftest import Manifest, of_kind, one, pod_template
from tests.k8s.test_wiring import container_env

ROOT = Path(__file__).resolve().parents[2]


def _env_secret(workload: Manifest, name: str) -> tuple[str, str]:
    for var in pod_template(workload)["containers"][0].get("env", []):
        if var["name"] == name:
            ref = var["valueFrom"]["secretKeyRef"]
            return ref["name"], ref["key"]
    raise AssertionError(f"{workload['metadata']['name']} has no {name}")


def test_each_service_logs_in_as_its_own_managed_role(docs: list[Manifest]) -> None:
    cluster = one(docs, "Cluster", "postgres")
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    for service in SERVICES:
        workload = one(docs, "Deployment", service)
        env, _ = container_env(docs, workload)
        dsn = urlsplit(env[f"{service.upper()}_POSTGRES__DSN"])
        assert dsn.username == login_role(service), service
        assert dsn.hostname == "postgres-rw"
        secret, key = _env_secret(workload, "POSTGRES_PASSWORD")
        assert (secret, key) == (f"postgres-{service}", "password")
        assert dsn.password == f"secret-{secret}-{key}"
        role = roles[login_role(service)]
        assert role["login"] is True
        assert role.get("superuser", False) is False
        assert role["inRoles"] == [group_role(service)]
        assert role["passwordSecret"]["name"] == secret
        assert roles[group_role(service)]["login"] is False


def test_only_the_migration_job_uses_the_owner(docs: list[Manifest]) -> None:
    readers = set()
    for workload in [*of_kind(docs, "Deployment"), *of_kind(docs, "Job")]:
        for container in pod_template(workload)["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == "postgres-app":
                    readers.add(workload["metadata"]["name"])
    assert readers == {"migrations"}


def test_external_secrets_give_cloudnative_pg_a_basic_auth_secret_per_role(
    docs: list[Manifest],
) -> None:
    secrets = {e["spec"]["target"]["name"]: e for e in of_kind(docs, "ExternalSecret")}
    if not secrets:  # dev: k8s/scripts/dev-secrets.sh makes them (test_manifests checks names)
        return
    for service in SERVICES:
        target = secrets[f"postgres-{service}"]["spec"]["target"]["template"]
        assert target["type"] == "kubernetes.io/basic-auth"
        assert target["data"]["username"] == login_role(service)


def test_the_migrations_grant_each_group_its_own_schema_only() -> None:
    for service in SERVICES:
        folder = ROOT / "migrations" / service
        sql = "\n".join(p.read_text() for p in sorted(folder.glob("*.sql")))
        grantees = set(re.findall(r"\bGRANT [^;]* TO (\w+)", sql))
        assert grantees == {group_role(service)}, service
        # GRANT … ON <schema>.<table> / SCHEMA <schema> / ALL … IN SCHEMA <schema>; default
        # privileges name theirs in ALTER DEFAULT PRIVILEGES IN SCHEMA <schema> (… ON TABLES).
        on = re.findall(
            r"\bGRANT [\w, ]+ ON (?:SCHEMA |ALL \w+ IN SCHEMA )?(?!TABLES\b|SEQUENCES\b)(\w+)", sql
        )
        on += re.findall(r"DEFAULT PRIVILEGES IN SCHEMA (\w+)", sql)
        assert on, service
        assert set(on) == {service}, (service, on)
