"""JSON log lines carry the fields collectors need, and never a credential."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from portico_common.logs import REQUEST_ID, OutageLog, TextFormatter, configure_logging, redact

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"
FIELDS = {"timestamp", "level", "logger", "message", "trace_id", "span_id", "request_id", "service"}


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"Authorization: Bearer {TOKEN}", TOKEN),
        ("authorization=Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("metadata (('authorization', 'Token s3cr3t-value'),)", "s3cr3t-value"),
        ("connecting to postgresql://portico:hunter2@db:5432/portico", "hunter2"),
        ("valkey at redis://:v4lkey-pass@cache:6379/0", "v4lkey-pass"),
        (f"refresh with {TOKEN} now", TOKEN),
        ("password=hunter2&user=ada", "hunter2"),
        ('{"refresh_token": "opaque-refresh-1"}', "opaque-refresh-1"),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert "[REDACTED]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "PASSWORD=hunter2",  # the rules ignore case; so does the quick check before them
        "Api_Key: hunter2",
        "pa\u017fsword=hunter2",  # long s: case-insensitive regexes take it for "s"
        "\u212aey token=hunter2",  # Kelvin sign, outside ASCII too
    ],
)
def test_redact_ignores_case_like_its_rules(text: str) -> None:
    assert "hunter2" not in redact(text)


def test_text_lines_show_logging_default_time() -> None:
    ours, standard = TextFormatter(), logging.Formatter()
    for created in (1_795_651_477.0004, 1_795_651_477.9996, 1_795_651_478.25, 1_795_651_477.5):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == standard.formatTime(record)


def test_redact_keeps_ordinary_text() -> None:
    text = "GET /v1/users/42 200 in 3 ms (postgresql://db:5432/portico)"
    assert redact(text) == text


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_trace_request_and_service_and_no_secret() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", service="users", fmt="json", stream=stream)
    tracer = TracerProvider().get_tracer("test")
    token = REQUEST_ID.set("req-1")
    try:
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("portico_users.x").info(
                "dsn %s header %s", "postgres://u:pw-123@h/db", f"Bearer {TOKEN}"
            )
            try:
                raise RuntimeError(f"failed with password=pw-123 and {TOKEN}")
            except RuntimeError:
                logging.getLogger("portico_users.x").exception("boom", extra={"token": TOKEN})
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("other").warning("outside any span")

    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # one valid JSON object per line
    assert len(entries) == 3
    assert all(set(e) >= FIELDS for e in entries)
    first, second, third = entries
    context = span.get_span_context()
    assert first["trace_id"] == format(context.trace_id, "032x")
    assert first["span_id"] == format(context.span_id, "016x")
    assert first["request_id"] == "req-1"
    assert first["service"] == "users"
    assert first["level"] == "INFO"
    assert first["logger"] == "portico_users.x"
    assert first["timestamp"].endswith("Z")
    assert "RuntimeError" in second["exception"]
    assert third["trace_id"] == ""
    assert third["request_id"] == "-"
    text = stream.getvalue()
    assert "pw-123" not in text
    assert TOKEN not in text


@pytest.mark.usefixtures("restore_root")
def test_text_format_is_one_redacted_line() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", service="gateway", fmt="text", stream=stream)
    logging.getLogger("portico_gateway").info("calling with Bearer %s", TOKEN)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "portico_gateway" in line
    assert "Bearer [REDACTED]" in line
    assert TOKEN not in line


def test_an_outage_is_logged_when_it_starts_and_when_it_ends_not_per_failed_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("portico.test.outage")
    outage = OutageLog(log, down="Valkey %s failed: %s: %s", up="Valkey is back")
    caplog.set_level(logging.INFO, logger=log.name)
    outage.succeeded()  # healthy already: nothing to say
    for operation in ("read", "write", "read"):
        outage.failed(ConnectionError("refused"), operation)
    outage.succeeded()
    outage.succeeded()
    outage.failed(TimeoutError("slow"), "write")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Valkey read failed: ConnectionError: refused"),
        ("INFO", "Valkey is back"),
        ("WARNING", "Valkey write failed: TimeoutError: slow"),
    ]
    assert outage.healthy is False
