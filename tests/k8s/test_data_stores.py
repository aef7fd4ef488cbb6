"""Least privilege in the data stores as deployed: manifests, migrations and code agree.

Each service logs in to PostgreSQL as its own CloudNativePG managed role, a member of the group
role its migrations grant its own tables to, with the password of a Secret that both the
Deployment and the operator read; only the migration Job uses the owner. Each component connects
to Valkey as its own ACL user, with the rules ``make run`` and the tests load
(``portico_devstack.valkey_acl``). See docs/data-stores.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from portico_common.valkey import is_sentinel_url, parse_sentinel_url
from portico_devstack import valkey_acl
from portico_devstack.roles import SERVICES, group_role, login_role
from portico_users.config import ValkeySettings
from tests.k8s.conftest import Manifest, of_kind, one, pod_template
from tests.k8s.test_wiring import container_env

ROOT = Path(__file__).resolve().parents[2]


def env_secret(workload: Manifest, name: str) -> tuple[str, str]:
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
        secret, key = env_secret(workload, "POSTGRES_PASSWORD")
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


def valkey_users(docs: list[Manifest]) -> dict[str, list[str]]:
    """``--user <name> <rules…>`` of the Valkey container, by user name."""
    (container,) = [
        c
        for c in pod_template(one(docs, "StatefulSet", "valkey"))["containers"]
        if c["name"] == "valkey"
    ]
    users: dict[str, list[str]] = {}
    current: list[str] | None = None
    for arg in container["args"]:
        if arg == "--user":
            current = []
            continue
        if arg.startswith("--"):
            current = None
        elif current is not None:
            if not current:
                users[arg] = current
            current.append(arg)
    return {name: rules[1:] for name, rules in users.items()}


def test_valkey_runs_the_acl_users_make_run_and_the_tests_use(docs: list[Manifest]) -> None:
    users = valkey_users(docs)
    assert users["default"][0] == "off"
    assert "nopass" not in users["default"]
    assert users["exporter"][2:] == ["resetchannels", "-@all", *valkey_acl.EXPORTER_RULES]
    for component in valkey_acl.COMPONENTS:
        variable = f"VALKEY_{component.upper()}_PASSWORD"
        assert users[component] == [
            "on",
            f">$({variable})",
            *valkey_acl.USERS[component].rules,
        ], component
        statefulset = one(docs, "StatefulSet", "valkey")
        assert env_secret(statefulset, variable) == ("valkey", component)


def test_each_component_connects_to_valkey_as_its_own_user(docs: list[Manifest]) -> None:
    for component in valkey_acl.COMPONENTS:
        workload = one(docs, "Deployment", component)
        env, _ = container_env(docs, workload)
        name = (
            "GATEWAY_VALKEY_URL" if component == "gateway" else f"{component.upper()}_VALKEY__URL"
        )
        url = urlsplit(env[name])
        assert url.username == component, component
        assert env_secret(workload, "VALKEY_PASSWORD") == ("valkey", component)
        assert url.password == f"secret-valkey-{component}"


def _bytes(size: str) -> int:
    units = {"mb": 2**20, "Mi": 2**20, "gb": 2**30, "Gi": 2**30}
    for unit, factor in units.items():
        if size.endswith(unit):
            return int(size.removesuffix(unit)) * factor
    raise AssertionError(f"unknown size {size}")


def _memory(docs: list[Manifest], name: str) -> tuple[str, str, int]:
    """(policy, appendonly, maxmemory bytes) of a Valkey StatefulSet, and its limit checked."""
    statefulset = one(docs, "StatefulSet", name)
    (container,) = [c for c in pod_template(statefulset)["containers"] if c["name"] == "valkey"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    args = container["args"]
    for flag, variable in (
        ("--maxmemory", "VALKEY_MAXMEMORY"),
        ("--maxmemory-policy", "VALKEY_MAXMEMORY_POLICY"),
        ("--appendonly", "VALKEY_APPENDONLY"),
    ):
        assert args[args.index(flag) + 1] == f"$({variable})", (name, flag)
    maxmemory = _bytes(env["VALKEY_MAXMEMORY"])
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert maxmemory <= limit // 2, (name, "maxmemory leaves room for buffers and AOF rewrites")
    return env["VALKEY_MAXMEMORY_POLICY"], env["VALKEY_APPENDONLY"], maxmemory


def test_state_never_evicts_and_the_cache_lives_on_an_evicting_instance_of_its_own(
    docs: list[Manifest],
) -> None:
    assert _memory(docs, "valkey")[:2] == ("noeviction", "yes")
    assert _memory(docs, "valkey-cache")[:2] == ("allkeys-lru", "no")
    env, _ = container_env(docs, one(docs, "Deployment", "users"))
    assert urlsplit(env["USERS_VALKEY__CACHE_URL"]).hostname == "valkey-cache"
    state = env["USERS_VALKEY__URL"]
    if is_sentinel_url(state):  # the HA overlays: the Sentinels beside the valkey pods
        hosts = {h.split(".")[0] for h, _ in parse_sentinel_url(state).sentinels}
        assert hosts == {"valkey-0", "valkey-1", "valkey-2"}, state
    else:
        assert urlsplit(state).hostname == "valkey"
    env, _ = container_env(docs, one(docs, "Deployment", "gateway"))
    edge = urlsplit(env["GATEWAY_VALKEY_CACHE_URL"])  # the edge path, as its own user
    assert (edge.hostname, edge.username) == ("valkey-cache", "gateway")
    assert edge.password == "secret-valkey-gateway"


def test_the_gateway_may_only_read_the_user_entries_of_the_cache() -> None:
    """Its one rule that names the users cache is a read-only selector for HMGET, and the key
    prefix it allows is the one the users service writes under."""
    rules = valkey_acl.USERS["gateway"].rules
    naming = [r for r in rules if "portico:users:" in r]
    assert naming == [f"(%R~{valkey_acl.USERS_CACHE_ENTRIES} +hmget)"]
    assert ValkeySettings().key_prefix + "user:*" == valkey_acl.USERS_CACHE_ENTRIES


def test_the_memory_alerts_read_what_each_instances_exporter_is_scraped_for(
    docs: list[Manifest],
) -> None:
    rules = (ROOT / "observability" / "prometheus" / "rules" / "valkey.yaml").read_text()
    assert "redis_memory_used_bytes" in rules
    assert "redis_memory_max_bytes" in rules
    scrape = (ROOT / "observability" / "prometheus" / "prometheus.yaml").read_text()
    (keep,) = re.findall(r"regex: (portico;valkey\S*;metrics)", scrape)
    monitors = [m for m in of_kind(docs, "ServiceMonitor") if m["metadata"]["name"] == "valkey"]
    for name in ("valkey", "valkey-cache"):
        statefulset = one(docs, "StatefulSet", name)
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        containers = {c["name"]: c for c in pod_template(statefulset)["containers"]}
        ports = {p["name"] for p in containers["exporter"]["ports"]}
        assert "metrics" in ports, name
        pod = f"{labels['app.kubernetes.io/part-of']};{labels['app.kubernetes.io/name']};metrics"
        assert re.fullmatch(keep, pod), (name, keep)
        for monitor in monitors:  # the Prometheus Operator's scrape, where it runs
            (expression,) = monitor["spec"]["selector"]["matchExpressions"]
            assert labels[expression["key"]] in expression["values"], name
