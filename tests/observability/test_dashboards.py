"""The Grafana dashboards load, are provisionable, and every query in them parses as PromQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.observability.catalog import (
    DATASOURCES,
    Query,
    dashboard_queries,
    dashboards,
    datasource_queries,
    load_yaml,
    panels,
    to_promql,
    unparsable,
)

DASHBOARD_UIDS = {"portico-gateway", "portico-services", "portico-slo", "portico-db-cache"}
KIBANA_SEARCH = "portico-logs-of-one-trace"


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every provisioned Grafana data source."""
    sources: dict[str, str] = {}
    for path in DATASOURCES.glob("*.yaml"):
        for source in load_yaml(path)["datasources"]:
            sources[source["uid"]] = source["type"]
    return sources


def test_the_golden_signals_slo_and_db_cache_dashboards_exist() -> None:
    assert {d["uid"] for d in dashboards().values()} == DASHBOARD_UIDS


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_has_a_title_a_stable_uid_and_no_instance_id(name: str) -> None:
    dashboard = dashboards()[name]
    assert dashboard["title"].startswith("Portico / ")
    assert dashboard["uid"] == Path(name).stem  # the file is named after its uid
    assert len(dashboard["uid"]) <= 40  # Grafana's uid limit
    assert dashboard.get("id") is None  # an instance's database id must not be provisioned
    assert "portico" in dashboard["tags"]
    assert isinstance(dashboard["schemaVersion"], int)


def test_titles_are_unique() -> None:
    titles = [d["title"] for d in dashboards().values()]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_panel_has_an_id_a_place_and_a_provisioned_datasource(name: str) -> None:
    sources = provisioned_datasources()
    ids: list[int] = []
    for panel in panels(dashboards()[name]):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]
        if panel["type"] in ("row", "text"):
            continue
        holders: list[dict[str, Any]] = [panel, *panel["targets"]]
        for holder in holders:
            datasource = holder["datasource"]
            assert datasource["uid"] in sources, (panel["title"], datasource)
            assert sources[datasource["uid"]] == datasource["type"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"], panel["title"]
    assert len(ids) == len(set(ids)), "panel ids must be unique within a dashboard"


def test_panels_do_not_overlap() -> None:
    for name, dashboard in dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        for panel in panels(dashboard):
            grid = panel["gridPos"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_every_dashboard_has_prometheus_queries() -> None:
    names = {q.where.split(":")[0] for q in dashboard_queries()}
    assert names == set(dashboards())


@pytest.mark.usefixtures("needs_promtool")
def test_every_panel_query_parses_as_promql(tmp_path: Path) -> None:
    queries = dashboard_queries() + datasource_queries()
    assert len(queries) > 50
    assert unparsable(queries, tmp_path) == []


@pytest.mark.usefixtures("needs_promtool")
def test_the_promql_check_reports_a_broken_panel_query(tmp_path: Path) -> None:
    broken = Query("portico-x.json: panel 'Broken' target A", "sum(rate(x[$__rate_interval])")
    fine = Query("portico-x.json: panel 'Fine' target A", "sum(rate(x[$__rate_interval]))")
    assert unparsable([fine, broken], tmp_path) == [f"{broken.where}: {broken.expr}"]


def test_grafana_variables_become_parsable_stand_ins() -> None:
    expr = 'sum(rate(m{namespace="$namespace", job=~"${job:regex}"}[$__rate_interval]))'
    assert to_promql(expr) == 'sum(rate(m{namespace="placeholder", job=~"placeholder"}[5m]))'


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_dashboard_filters_by_namespace_and_links_to_the_kibana_trace_search(
    name: str,
) -> None:
    dashboard = dashboards()[name]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "namespace" in variables
    urls = [link.get("url", "") for link in dashboard["links"]]
    assert any(f"/app/discover#/view/{KIBANA_SEARCH}" in url for url in urls)


def test_latency_panels_offer_exemplars_to_jump_to_traces() -> None:
    exemplar_queries = [
        target["expr"]
        for dashboard in dashboards().values()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("exemplar")
    ]
    assert any("portico_http_server_duration_seconds_bucket" in q for q in exemplar_queries)
    assert any("portico_grpc_server_duration_seconds_bucket" in q for q in exemplar_queries)
