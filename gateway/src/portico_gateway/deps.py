"""``Annotated`` dependency aliases for gateway-owned routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portico_gateway.clients.upstream import Upstream


def _upstreams(request: Request) -> dict[str, Upstream]:
    upstreams: dict[str, Upstream] = request.state.upstreams
    return upstreams


UpstreamsDep = Annotated[dict[str, Upstream], Depends(_upstreams)]
