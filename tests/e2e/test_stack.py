"""The stack as users meet it: the documented walkthroughs, REST, gRPC reflection and stubs, start
and stop."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2

from tests.e2e.conftest import Stack, admin_token, start_stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "services" / "users" / "examples"


def doc_block(marker: str, page: str = "README.md") -> str:
    """The fenced code block after ``<!-- marker -->`` in ``page`` (from the repository root)."""
    text = (ROOT / page).read_text()
    match = re.search(rf"<!-- {marker} -->\s*```(?:bash|sh)\n(.*?)```", text, re.DOTALL)
    assert match, f"{page} has no block marked {marker}"
    return match.group(1)


def run_bash(script: str, stack: Stack) -> str:
    script = script.replace("http://127.0.0.1:8000", stack.base_url)
    script = script.replace("127.0.0.1:50051", stack.grpc_target)
    script = script.replace("127.0.0.1:50052", stack.auth_target)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README examples use curl")
def test_readme_rest_walkthrough_works_as_printed(stack: Stack) -> None:
    out = run_bash(doc_block("e2e:rest"), stack)
    assert '401 Bearer realm="portico"' in out  # no token
    assert '"email":"admin@example.com"' in out  # /v1/users/me
    assert re.search(r"^/v1/users/[0-9a-f-]{36}$", out, re.MULTILINE), out
    assert re.search(r"(?i)^etag: \"", out, re.MULTILINE), out
    assert '"display_name":"Ada King"' in out
    for status in (412, 409, 400, 404):
        assert f'"status":{status}' in out, (status, out)
    assert re.search(r"^204$", out, re.MULTILINE), out
    assert '"status":"ok"' in out
    assert "200 application/json" in out
    assert "200 text/html" in out


def test_readme_grpc_examples_work_as_printed(stack: Stack) -> None:
    out = run_bash(doc_block("e2e:grpc"), stack)
    assert "portico.users.v1.UserService" in out
    assert "grpc.health.v1.Health" in out
    assert "rpc ListUsers(portico.users.v1.ListUsersRequest)" in out
    assert '"display_name": "Alan Turing"' in out
    assert "after delete: NOT_FOUND" in out


def test_reflection_client_reports_errors_as_status(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "reflection_client.py"),
            stack.grpc_target,
            "call",
            "portico.users.v1.UserService/GetUser",
            '{"id": "not-a-uuid"}',
            f"--token={admin_token(stack)}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("INVALID_ARGUMENT")


def test_rest_and_grpc_see_the_same_user(stack: Stack, http: httpx.Client) -> None:
    email = f"both-{uuid.uuid4().hex[:8]}@example.com"
    created = http.post("/v1/users", json={"email": email, "display_name": "Both Ways"})
    assert created.status_code == 201
    user_id = created.json()["id"]
    with grpc.insecure_channel(stack.grpc_target) as channel:
        from portico.users.v1 import users_pb2, users_pb2_grpc

        reply = users_pb2_grpc.UserServiceStub(channel).GetUser(
            users_pb2.GetUserRequest(id=user_id),
            timeout=5,
            metadata=(("authorization", http.headers["authorization"]),),
        )
    assert reply.user.email == email
    assert created.headers["etag"] == f'"{reply.user.etag}"'


def _edge_hits(http: httpx.Client) -> float:
    found = re.search(
        r'^portico_gateway_edge_reads_total\{result="hit"\} ([0-9.e+]+)$',
        http.get("/metrics").text,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def test_the_gateway_answers_a_cached_read_itself_from_the_cache_instance(
    http: httpx.Client,
) -> None:
    """The launcher's wiring: the gateway reads the users cache's own instance, as its ACL user
    (a NOPERM or a wrong instance would be a miss every time, and the hit count would not move)."""
    email = f"edge-{uuid.uuid4().hex[:8]}@example.com"
    created = http.post("/v1/users", json={"email": email, "display_name": "Edge"})
    assert created.status_code == 201
    path = f"/v1/users/{created.json()['id']}"
    first = http.get(path)  # through the users service, which fills its cache
    hits = _edge_hits(http)
    second = http.get(path)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["cache-control"] == "private, no-cache"
    assert _edge_hits(http) == hits + 1
    unchanged = http.get(path, headers={"If-None-Match": second.headers["etag"]})
    assert unchanged.status_code == 304


def test_request_id_is_echoed_and_errors_are_problem_json(http: httpx.Client) -> None:
    response = http.get("/v1/users/not-a-uuid", headers={"X-Request-ID": "e2e-check-1"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "e2e-check-1"
    body = response.json()
    assert body["request_id"] == "e2e-check-1"
    assert {e["field"] for e in body["errors"]} == {"id"}


def _health(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_stack_stops_cleanly_on_sigterm_and_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / ".data"
    stack = start_stack(data)
    children = stack.children()
    assert len(children) >= 2
    assert _health(stack.grpc_target) == "SERVING"
    admin = {"Authorization": f"Bearer {admin_token(stack)}"}
    with httpx.Client(base_url=stack.base_url, timeout=5, headers=admin) as http:
        email = f"kept-{uuid.uuid4().hex[:8]}@example.com"
        assert http.post("/v1/users", json={"email": email, "display_name": "K"}).status_code == 201
    assert stack.stop() == 0, "\n".join(stack.output)
    time.sleep(0.2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert any("PostgreSQL stopped; data kept" in line for line in stack.output)
    for name in ("gateway", "users"):  # each drained and exited cleanly
        assert f"portico | {name} stopped (exit code 0)" in stack.output, stack.output

    again = start_stack(data)  # warm start: same data folder, no initdb, no migrations left
    try:
        assert any("migrations: 0 applied" in line for line in again.output)
        admin = {"Authorization": f"Bearer {admin_token(again)}"}  # the account was kept
        with httpx.Client(base_url=again.base_url, timeout=5, headers=admin) as http:
            listed = http.get("/v1/users", params={"page_size": 100}).json()
        assert email in {u["email"] for u in listed["users"]}
    finally:
        assert again.stop() == 0


def test_ctrl_c_drains_the_services_before_the_backends_without_a_traceback(
    tmp_path: Path,
) -> None:
    """Ctrl-C reaches the launcher's whole process group, the embedded Valkey included.

    Valkey used to exit on that SIGINT at once, before the services drained: the auth service
    then failed to end its own identity session and printed a traceback. The services must stop
    first, each exit 0, then Valkey, then PostgreSQL, and nothing prints a traceback.
    """
    stack = start_stack(tmp_path / ".data")
    admin_token(stack)  # a sign-up: the auth service now holds an identity session in Valkey
    assert stack.interrupt() == 0, "\n".join(stack.output)
    output = stack.output
    assert not [line for line in output if "Traceback" in line], "\n".join(output)
    assert not [line for line in output if "could not end" in line], "\n".join(output)

    def position(text: str) -> int:
        found = [i for i, line in enumerate(output) if line.endswith(text)]
        assert found, f"{text!r} not in:\n" + "\n".join(output)
        return found[0]

    order = [
        position(f"portico | {name} stopped (exit code 0)")
        for name in ("gateway", "audit", "auth", "users")
    ]
    assert order == sorted(order), "\n".join(output)
    assert (
        order[-1] < position("portico | Valkey stopped") < position("PostgreSQL stopped; data kept")
    )


def test_launcher_exits_nonzero_when_a_service_dies(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / ".data")
    users = next(c for c in stack.children() if "portico_users" in " ".join(c.cmdline()))
    gateway = next(c for c in stack.children() if "portico_gateway" in " ".join(c.cmdline()))
    users.send_signal(signal.SIGKILL)
    assert stack.wait(60) == 1
    assert any("users exited unexpectedly" in line for line in stack.output), stack.output
    gateway.wait(timeout=5)  # stopped by the launcher, not orphaned


#: The operations of the committed OpenAPI document (``make openapi-check`` keeps it the one the
#: gateway serves), as (method, path).
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.json"
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: An access-log line of a 429 (``METHOD route status``): a limiter stopped a request.
_THROTTLED = re.compile(r"\b(?:GET|PUT|POST|DELETE|OPTIONS|HEAD|PATCH|TRACE) /\S* 429\b")


def documented_operations() -> set[tuple[str, str]]:
    paths = json.loads(OPENAPI.read_text())["paths"]
    return {(m.upper(), path) for path, item in paths.items() for m in item if m in _METHODS}


def operations_tested(report: Path) -> set[tuple[str, str]]:
    """The (method, path) of every operation a schemathesis run tested, from its JUnit report:
    one test case per operation (named ``METHOD /path``), with ``<skipped>`` when untested."""
    # schemathesis's own report of the run this test just made, not outside input
    cases = ElementTree.parse(report).getroot().iter("testcase")  # noqa: S314
    tested = set()
    for case in cases:
        assert case.find("failure") is None, case.get("name")
        assert case.find("error") is None, case.get("name")
        if case.find("skipped") is None:
            method, _, path = str(case.get("name")).partition(" ")
            tested.add((method, path))
    return tested


def schemathesis(stack: Stack, cwd: Path, *options: str, examples: int) -> set[tuple[str, str]]:
    """Run schemathesis on the live stack's OpenAPI document; the operations it tested, when it
    passes (no server error, no schema violation: ``--checks=all``)."""
    report = cwd / f"schemathesis-{uuid.uuid4().hex}.xml"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{stack.base_url}/openapi.json",
            f"--max-examples={examples}",
            "--seed=1",
            "--workers=1",
            "--checks=all",
            "--exclude-checks=positive_data_acceptance",
            "--generation-database=none",
            "--phases=examples,coverage,fuzzing",
            "--request-timeout=10",
            "--report=junit",
            f"--report-junit-path={report}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for line in result.stdout.splitlines():  # shown with `pytest -s`: how many cases ran
        if "generated" in line:
            print("schemathesis", " ".join(options[-1:]), line.strip())  # noqa: T201
    return operations_tested(report)


# Three bounded schemathesis runs, each limited by its own subprocess timeout (300 s): on a busy
# machine together they outlast the suite's 120 s per test, which is a backstop, not a budget.
@pytest.mark.timeout(3 * 300 + 60)
def test_openapi_contract_holds_under_fuzzing(stack: Stack, tmp_path: Path) -> None:
    """schemathesis against the live stack, as an admin: no 5xx, responses match the schemas,
    every documented operation tested, no request stopped by a limiter.

    ``positive_data_acceptance`` is left out: some schema-valid requests are refused by design
    (an opaque ``page_token`` the server never issued, a random ``If-Match``), which no JSON
    Schema can express. Bounded: 40 cases per operation, fixed seed. Logout is fuzzed in a run
    of its own without the token (with it, a generated logout would end the admin's session and
    leave the rest of the run at 401). Together the two runs test every operation of
    ``docs/api/openapi.json``. Then a short anonymous run: every protected operation must answer
    its documented 401. The stack runs with the gateway's rate limits off and the login and
    sign-up throttles far above what the runs send (``tests/e2e/conftest.py``); the access log
    shows that no request met a 429.
    """
    token = admin_token(stack)
    logged = len(stack.output)
    tested = schemathesis(
        stack,
        tmp_path,
        f"--header=Authorization: Bearer {token}",
        "--exclude-path=/v1/auth/logout",
        examples=40,
    )
    # The authenticated run got past authorization (the access log names route and status):
    assert any("GET /v1/users/me 200" in line for line in stack.output), stack.output[-20:]
    tested |= schemathesis(stack, tmp_path, "--include-path=/v1/auth/logout", examples=20)
    documented = documented_operations()
    missing = sorted(f"{method} {path}" for method, path in documented - tested)
    assert not missing, f"schemathesis did not test: {missing}"
    assert tested == documented, sorted(tested - documented)
    schemathesis(stack, tmp_path, "--exclude-path=/v1/auth/logout", examples=5)
    throttled = [line for line in stack.output[logged:] if _THROTTLED.search(line)]
    assert not throttled, throttled[:5]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the documented examples use curl")
def test_api_docs_auth_walkthrough_works_as_printed(stack: Stack) -> None:
    out = run_bash(doc_block("e2e:auth", "docs/api.md"), stack)
    assert re.search(r'"user_id":"[0-9a-f-]{36}"', out), out
    assert '"token_type":"Bearer"' in out
    assert re.search(r"^204$", out, re.MULTILINE), out
    assert '"status":401' in out  # the spent refresh token no longer works
    assert '"status":403' in out  # someone else's account
    assert "after logout: 401" in out  # the access token died with the session
    assert '"kty":"OKP"' in out
