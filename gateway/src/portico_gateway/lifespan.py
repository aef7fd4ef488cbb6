"""The gateway's lifespan: one long-lived grpc.aio channel per upstream and one Valkey client
(and one more for the users cache's own instance, read by the edge path, when it has one).

Each channel carries the tracing and RED-metrics client interceptors (``portico_common``) and a
service config that retries the upstream's idempotent RPCs (:mod:`.clients.retries`).

A channel per request costs ~40 % of throughput (measured in the Portico prototype); one shared
channel multiplexes every call over HTTP/2 and reconnects by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TypedDict

import grpc
from fastapi import FastAPI
from google.protobuf.descriptor import ServiceDescriptor
from valkey.asyncio import Valkey

from portico_common.forwarding import FORWARDER_HEADER
from portico_common.telemetry import client_interceptors
from portico_common.tokens import TokenVerifier, jwks_from_auth_service, open_token_verifier
from portico_common.valkey import client as valkey_client
from portico_gateway.clients.edge_cache import EdgeCache
from portico_gateway.clients.retries import channel_options
from portico_gateway.clients.upstream import Upstream
from portico_gateway.config import GatewaySettings

_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
)


def upstream_metadata(name: str, settings: GatewaySettings) -> tuple[tuple[str, str], ...]:
    """What every call to upstream ``name`` carries besides the request's own metadata.

    The auth service alone gets the forwarder key, which proves that the ``x-forwarded-for`` of
    the call is the gateway's (``portico_common.forwarding``); no other service is sent it, so
    none can replay it.
    """
    key = settings.forwarder_key.get_secret_value()
    return ((FORWARDER_HEADER, key),) if name == "auth" and key else ()


class State(TypedDict):
    """What every request sees as ``request.state``."""

    upstreams: dict[str, Upstream]
    #: Sessions (token checks), rate limits and idempotency records; middleware finds it in
    #: ``scope["state"]["valkey"]``.
    valkey: Valkey
    #: Checks access tokens (see :mod:`portico_gateway.middleware.authentication`).
    verifier: TokenVerifier
    #: Reads the owner's cache for ``portico.edge.v1.cacheable`` reads; None when
    #: ``edge_reads`` is off (:mod:`portico_gateway.clients.edge_cache`).
    edge_cache: EdgeCache | None


def make_lifespan(
    settings: GatewaySettings,
    targets: Mapping[str, tuple[str, ServiceDescriptor]],
    *,
    verifier: TokenVerifier | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    """The lifespan that opens a channel to each ``targets`` entry (name → (host:port, service)).

    The token verifier fetches the JWKS from the ``auth`` upstream (``settings.auth_target``
    when there is none) and checks sessions in Valkey; ``verifier`` replaces it (tests).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:
            upstreams: dict[str, Upstream] = {}
            for name, (target, service) in targets.items():
                options = _CHANNEL_OPTIONS + channel_options([service], settings)
                channel = grpc.aio.insecure_channel(
                    target, options=options, interceptors=client_interceptors()
                )
                stack.push_async_callback(channel.close)
                upstreams[name] = Upstream(
                    name,
                    channel,
                    timeout_s=settings.rpc_timeout_s,
                    metadata=upstream_metadata(name, settings),
                )
            client = valkey_client(  # one server, or the primary through Sentinel
                settings.valkey_url.get_secret_value(),
                socket_timeout_s=settings.valkey_timeout_s,
                connect_timeout_s=settings.valkey_timeout_s,
            )
            stack.push_async_callback(client.aclose)
            edge_cache = None
            if settings.edge_reads:
                cache_client = client
                if settings.valkey_cache_url is not None:
                    cache_client = valkey_client(
                        settings.valkey_cache_url.get_secret_value(),
                        socket_timeout_s=settings.valkey_timeout_s,
                        connect_timeout_s=settings.valkey_timeout_s,
                    )
                    stack.push_async_callback(cache_client.aclose)
                edge_cache = EdgeCache(cache_client, key_prefix=settings.edge_cache_key_prefix)
            if verifier is None:
                auth = upstreams.get("auth")
                if auth is not None:
                    channel = auth.channel
                else:
                    channel = grpc.aio.insecure_channel(settings.auth_target)
                    stack.push_async_callback(channel.close)
                checker = await open_token_verifier(
                    stack,
                    client,
                    jwks_from_auth_service(channel),
                    issuer=settings.token_issuer,
                    audience=settings.token_audience,
                    session_key_prefix=settings.session_key_prefix,
                    jwks_max_age_s=settings.jwks_max_age_s,
                )
            yield {
                "upstreams": upstreams,
                "valkey": client,
                "verifier": checker if verifier is None else verifier,
                "edge_cache": edge_cache,
            }

    return lifespan
