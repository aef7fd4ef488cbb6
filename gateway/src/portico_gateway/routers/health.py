"""Gateway-owned probes: ``/healthz`` (the process is alive) and ``/readyz`` (upstreams serve)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from portico_gateway.deps import UpstreamsDep
from portico_gateway.errors import problem
from portico_gateway.transcoding.openapi import PROBLEM

TAG: dict[str, Any] = {
    "name": "health",
    "description": "The gateway's probes, for Kubernetes and load balancers.",
}


class Liveness(BaseModel):
    """The answer of ``/healthz``."""

    status: str = Field(description='Always "ok".')


class Readiness(BaseModel):
    """The answer of ``/readyz`` when every upstream serves."""

    status: str = Field(description='Always "ready".')
    upstreams: dict[str, str] = Field(
        description="Each upstream's grpc.health.v1 status, by name (`users`: `SERVING`)."
    )


def make_router(*, readiness_timeout_s: float, retry_after_s: int) -> APIRouter:
    router = APIRouter(tags=[TAG["name"]])

    @router.get(
        "/healthz",
        summary="Liveness",
        description="200 while the gateway process runs; says nothing about upstreams.",
        operation_id="getLiveness",
        response_model=Liveness,
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness",
        description="200 when every upstream's grpc.health.v1 check answers SERVING, else 503 "
        "(503 too once the gateway is shutting down).",
        operation_id="getReadiness",
        responses={
            200: {"model": Readiness},
            503: {
                "description": "An upstream is not serving, or the gateway is shutting down.",
                "content": {
                    "application/problem+json": {
                        "schema": {"$ref": f"#/components/schemas/{PROBLEM}"}
                    }
                },
            },
        },
    )
    async def readyz(request: Request, upstreams: UpstreamsDep) -> Any:
        if getattr(request.app.state, "draining", False):  # set on SIGTERM (see __main__)
            return problem(
                request,
                status=503,
                detail="shutting down",
                headers={"Retry-After": str(retry_after_s)},
            )
        names = list(upstreams)
        states = await asyncio.gather(
            *(upstreams[n].health(timeout_s=readiness_timeout_s) for n in names)
        )
        status = dict(zip(names, states, strict=True))
        waiting = [n for n, s in status.items() if s != "SERVING"]
        if waiting:
            detail = "not ready: " + ", ".join(f"{n} is {status[n]}" for n in waiting)
            return problem(
                request, status=503, detail=detail, headers={"Retry-After": str(retry_after_s)}
            )
        return {"status": "ready", "upstreams": status}

    return router
