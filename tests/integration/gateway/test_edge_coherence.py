"""Coherence of the edge path across gateway replicas: two gateway processes, one Valkey.

The statement under test (docs/architecture.md, "The edge path"): after a write was answered
to any client, every gateway serves the new version; a delete is visible at once; and a client
never sees a version older than one it was already served. The gateways are real processes
(``python -m portico_gateway``, JWKS from a real auth server), in front of one users service, so
nothing they share but Valkey and the service could make them agree.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portico_users.server import RunningServer
from tests.support.auth import running_auth
from tests.support.processes import free_port, kill, read_until, spawn
from tests.support.stores import component_valkey_url
from tests.support.tokens import Tokens, signing_material

#: A slow, shared machine still starts a gateway within this (it imports FastAPI and the protos).
START_WITHIN_S = 60.0
#: Bounded load: writes in the storm, and readers reading all along.
WRITES = 25
READERS = 3


async def edge_hits(api: httpx.AsyncClient) -> float:
    """The gateway process's ``portico_gateway_edge_reads_total{result="hit"}``."""
    text = (await api.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "portico_gateway_edge_reads_total" and sample.labels["result"] == "hit"
    )


def version(etag: str) -> int:
    """The row version an ``ETag`` header stands for (the users service's etag encoding)."""
    return int.from_bytes(base64.urlsafe_b64decode(etag.strip('"') + "="), "big")


@asynccontextmanager
async def gateway_process(env: dict[str, str]) -> AsyncIterator[str]:
    """A gateway process with ``env``; its base URL while it runs. Killed (by PID) on exit."""
    port = free_port()
    process = await spawn("portico_gateway", {**env, "GATEWAY_PORT": str(port)})
    assert process.stdout is not None
    stdout = process.stdout
    try:
        await read_until(process, "Uvicorn running on", within_s=START_WITHIN_S)
        drained = asyncio.create_task(stdout.read())  # a full pipe must never block it
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            kill(process)
            await process.wait()
            await drained
    finally:
        kill(process)


@pytest.fixture
async def replicas(
    users_server: RunningServer, database_url: str, valkey_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of two gateway processes in front of the one users service and Valkey."""
    async with AsyncExitStack() as stack:
        auth = await stack.enter_async_context(
            running_auth(
                database_url=database_url,
                valkey_url=valkey_url,
                users_port=users_server.port,
                key_file=signing_material().key_file,
            )
        )
        env = {
            "GATEWAY_USERS_TARGET": f"127.0.0.1:{users_server.port}",
            "GATEWAY_AUTH_TARGET": f"127.0.0.1:{auth.port}",
            "GATEWAY_AUDIT_TARGET": f"127.0.0.1:{free_port()}",
            "GATEWAY_VALKEY_URL": component_valkey_url(valkey_url, "gateway"),
            "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
            "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
            "GATEWAY_LOG_FORMAT": "text",
            "OTEL_SDK_DISABLED": "true",
        }
        clients = []
        for _ in range(2):
            url = await stack.enter_async_context(gateway_process(env))
            clients.append(
                await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30.0))
            )
        yield clients[0], clients[1]


async def test_a_write_through_one_gateway_is_read_at_once_through_the_other(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient], tokens: Tokens
) -> None:
    a, b = replicas
    admin = {"Authorization": f"Bearer {await tokens.admin()}"}
    created = await a.post(
        "/v1/users",
        json={"email": f"{uuid.uuid4().hex}@example.com", "display_name": "v0"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    path = created.headers["Location"]
    owner = {"Authorization": f"Bearer {await tokens.issue(created.json()['id'])}"}
    for api in (a, b):  # both warm: the entry is cached, and each gateway has served it
        assert (await api.get(path, headers=owner)).json()["display_name"] == "v0"

    served: list[list[int]] = [[] for _ in range(READERS)]
    writing = True

    async def read(index: int) -> None:
        while writing:
            for api in (a, b):
                response = await api.get(path, headers=owner)
                assert response.status_code == 200, response.text
                served[index].append(version(response.headers["ETag"]))

    readers = [asyncio.create_task(read(i)) for i in range(READERS)]
    try:
        for n in range(1, WRITES + 1):
            patched = await a.patch(path, json={"display_name": f"v{n}"}, headers=owner)
            assert patched.status_code == 200, patched.text
            written = version(patched.headers["ETag"])
            # Read-your-writes on the other replica: the new version, at once.
            read_back = await b.get(path, headers=owner)
            assert read_back.json()["display_name"] == f"v{n}"
            assert version(read_back.headers["ETag"]) == written
    finally:
        writing = False
        await asyncio.gather(*readers)
    for versions in served:  # no reader was served an older version after a newer one
        assert versions == sorted(versions)
        assert versions
    assert max(max(v) for v in served) <= written
    for api in (a, b):  # and the gateways answered from the cache, not only the service
        assert await edge_hits(api) >= WRITES

    assert (await a.delete(path, headers=admin)).status_code == 204
    for api in (b, a):
        gone = await api.get(path, headers=admin)
        assert gone.status_code == 404, gone.text
