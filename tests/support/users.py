"""Helpers for the users service's integration tests: settings, rich statuses, a TCP relay."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import SecretStr

from portico_users.config import PostgresSettings, UsersSettings, ValkeySettings
from tests.support.stores import component_valkey_url, service_database_url
from tests.support.timeouts import POSTGRES_CONNECT_TIMEOUT_S, VALKEY_TIMEOUT_S
from tests.support.tokens import signing_material


def users_settings(*, database_url: str, valkey_url: str, **overrides: Any) -> UsersSettings:
    """Settings for an in-process server on an ephemeral loopback port, with fast probes."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,  # no metrics HTTP server (tests that want one pass a port)
        "shutdown_grace_s": 2.0,
        "health_check_interval_s": 0.2,
        "postgres": PostgresSettings(
            dsn=SecretStr(service_database_url(database_url, "users")),
            connect_timeout_s=POSTGRES_CONNECT_TIMEOUT_S,
            query_timeout_s=5.0,
        ),
        "valkey": ValkeySettings(
            url=SecretStr(component_valkey_url(valkey_url, "users")),
            socket_timeout_s=VALKEY_TIMEOUT_S,
            socket_connect_timeout_s=VALKEY_TIMEOUT_S,
        ),
        "jwks_file": signing_material().jwks_file,  # tokens from tests.support.tokens
    }
    values.update(overrides)
    return UsersSettings(**values)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The ``google.rpc.Status`` in ``grpc-status-details-bin`` (empty if absent)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status()


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest field violation of the error."""
    found: list[tuple[str, str]] = []
    for detail in rich_status(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of the error, if it has one."""
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


def tcp_dsn(database_url: str, port: int) -> str:
    """``database_url`` (TCP or unix socket) rewritten to reach 127.0.0.1:``port`` over TCP."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=""))


@contextlib.asynccontextmanager
async def relay(database_url: str, port: int) -> AsyncIterator[None]:
    """Forward 127.0.0.1:``port`` to the PostgreSQL server of ``database_url`` while open."""
    parts = urlsplit(database_url)
    socket_dir = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
    pg_port = parts.port or 5432

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{pg_port}")
        return await asyncio.open_connection(socket_dir, pg_port)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await connect()
        for task in (
            asyncio.create_task(pipe(reader, upstream_writer)),
            asyncio.create_task(pipe(upstream_reader, writer)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
