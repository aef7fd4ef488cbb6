"""Alerts reach someone: ``observability/alertmanager/alertmanager.yaml`` against the rules.

* ``amtool check-config`` accepts the file the cluster's Alertmanager runs;
* ``amtool config routes test`` sends every alert of ``observability/prometheus/rules`` (with the
  labels its rule gives it) to the receiver its severity names: page -> PagerDuty, ticket -> the
  team's Slack channel; kube-prometheus-stack's severities and its Watchdog route too;
* the inhibitions silence the symptoms named, in the same namespace only, and every matcher of
  them selects alerts that exist. amtool cannot evaluate inhibitions offline, so
  :func:`inhibited` applies Alertmanager's rule (source and target matchers, ``equal`` labels;
  regexes anchored) to label sets here;
* every alert's runbook link names a heading of ``docs/observability.md``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.observability.catalog import OBSERVABILITY, ROOT, load_yaml, rules

CONFIG = OBSERVABILITY / "alertmanager" / "alertmanager.yaml"
DOCS = ROOT / "docs" / "observability.md"
RECEIVER = {"page": "pagerduty", "ticket": "tickets"}
NAMESPACE = "portico-prod"
_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def amtool() -> str:
    binary = shutil.which("amtool")
    if binary is None:
        pytest.skip(
            "amtool is missing: `make obs-check` installs it (Debian prometheus-alertmanager)"
        )
    return binary


def alerts() -> dict[str, dict[str, Any]]:
    return {str(rule["alert"]): rule for _, rule in rules() if "alert" in rule}


def alert_labels(name: str) -> dict[str, str]:
    """The labels an alert fires with: its rule's, the alertname, the namespace, and the
    component/slo the burn-rate alerts keep from the recording rules they read."""
    rule = alerts()[name]
    labels = {"alertname": name, "namespace": NAMESPACE, **rule.get("labels", {})}
    slo = re.search(r'component="(\w+)", slo="(\w+)"', rule["expr"])
    if slo:
        labels |= {"component": slo.group(1), "slo": slo.group(2)}
    return labels


def routed(labels: dict[str, str], receiver: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            amtool(),
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"--verify.receivers={receiver}",
            *(f"{k}={v}" for k, v in labels.items()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_amtool_accepts_the_configuration() -> None:
    result = subprocess.run(
        [amtool(), "check-config", str(CONFIG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_is_routed_by_its_severity(name: str) -> None:
    labels = alert_labels(name)
    expected = RECEIVER[labels["severity"]]
    result = routed(labels, expected)
    assert result.returncode == 0, f"{name} -> {result.stdout.strip()} (expected {expected})"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "KubePodCrashLooping", "severity": "warning"}, "tickets"),
        ({"alertname": "KubeAPIDown", "severity": "critical"}, "pagerduty"),
        ({"alertname": "Watchdog", "severity": "none"}, "blackhole"),
        ({"alertname": "CPUThrottlingHigh", "severity": "info"}, "blackhole"),
        ({"alertname": "SomethingNew"}, "tickets"),  # no severity: someone still sees it
    ],
)
def test_other_alerts_are_routed_too(labels: dict[str, str], receiver: str) -> None:
    result = routed(labels, receiver)
    assert result.returncode == 0, f"{labels} -> {result.stdout.strip()} (expected {receiver})"


def test_the_route_check_can_fail() -> None:
    result = routed(alert_labels("PorticoUsersDown"), "tickets")
    assert result.returncode != 0, "a page routed to tickets was accepted"


# ---------------------------------------------------------------- inhibitions


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for text in matchers:
        match = _MATCHER.match(" ".join(text.split()))
        assert match, f"matcher this test cannot read: {text!r}"
        label, op, value = match.groups()
        actual = labels.get(label, "")
        if op == "=":
            ok = actual == value
        elif op == "!=":
            ok = actual != value
        elif op == "=~":
            ok = re.fullmatch(value, actual) is not None
        else:
            ok = re.fullmatch(value, actual) is None
        if not ok:
            return False
    return True


def inhibited(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    """Whether Alertmanager mutes ``target`` while ``firing`` alerts fire (an alert never
    inhibits itself: source and target must be different alerts)."""
    for rule in load_yaml(CONFIG)["inhibit_rules"]:
        if not _matches(rule["target_matchers"], target):
            continue
        for source in firing:
            if source == target or not _matches(rule["source_matchers"], source):
                continue
            if all(source.get(k, "") == target.get(k, "") for k in rule.get("equal", [])):
                return True
    return False


def test_causes_silence_their_symptoms_in_the_same_namespace_only() -> None:
    users_down = alert_labels("PorticoUsersDown")
    gateway_burn = alert_labels("PorticoGatewayAvailabilityFastBurn")
    assert inhibited(gateway_burn, [users_down])
    assert inhibited(alert_labels("PorticoUsersCacheErrors"), [users_down])
    elsewhere = {**users_down, "namespace": "portico-staging"}
    assert not inhibited(gateway_burn, [elsewhere])
    # The cause itself stays, and an unrelated alert is not muted.
    assert not inhibited(users_down, [users_down, gateway_burn])
    assert not inhibited(alert_labels("PorticoAuditDeadLetters"), [users_down])
    # A fast burn covers the slow burn of the same SLO, not of another one.
    fast = alert_labels("PorticoAuthLatencyFastBurn")
    assert inhibited(alert_labels("PorticoAuthLatencySlowBurn"), [fast])
    assert not inhibited(alert_labels("PorticoAuthAvailabilitySlowBurn"), [fast])
    assert not inhibited(alert_labels("PorticoUsersLatencySlowBurn"), [fast])
    archiving = alert_labels("PorticoPostgresWalArchivingFailing")
    assert inhibited(alert_labels("PorticoPostgresBackupStale"), [archiving])


def test_every_inhibition_selects_alerts_that_exist() -> None:
    portico = [alert_labels(name) for name in alerts()]
    external = [{"alertname": "InfoInhibitor", "severity": "none"}, {"severity": "info"}]
    for index, rule in enumerate(load_yaml(CONFIG)["inhibit_rules"]):
        candidates = external if "InfoInhibitor" in str(rule["source_matchers"]) else portico
        assert any(_matches(rule["source_matchers"], a) for a in candidates), f"rule {index}"
        assert any(_matches(rule["target_matchers"], a) for a in candidates), f"rule {index}"


# ---------------------------------------------------------------- runbooks


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, spaces to dashes, punctuation dropped."""
    found = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = heading.group(1).strip().lower().replace("`", "")
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    present = anchors(DOCS.read_text())
    for name, rule in alerts().items():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert (ROOT / path).resolve() == DOCS.resolve(), (name, url)
        assert anchor in present, f"{name}: docs/observability.md has no heading #{anchor}"


def test_alert_templates_use_the_runbook_annotation_the_rules_set() -> None:
    text = Path(CONFIG).read_text()
    assert ".CommonAnnotations.runbook_url" in text
    assert all("runbook_url" in rule["annotations"] for rule in alerts().values())
