"""The generated Python client (``portico_client``, ``make clients``) against a running stack.

Signs up a new user, logs in, reads and renames itself with ``If-Match``, fails a stale rename
(a 412 problem, read as a typed ``Problem``), pages through the users as the admin, refreshes
its tokens, logs out, and is refused with the spent token (a 401 problem). Prints what it saw
as JSON; ``tests/clients`` checks it against the stack, and so does the TypeScript walkthrough.

    make clients
    PYTHONPATH=clients/python/portico-client .venv/bin/python clients/python/walkthrough.py \\
        --base-url http://127.0.0.1:8000 --admin-password 'dev admin password'

The admin (an email in ``AUTH_ADMIN_EMAILS``; ``make run`` has ``admin@example.com``) must have
signed up already, as in the README's walkthrough.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import secrets
import uuid
from typing import Any, TypeVar
from uuid import UUID

from portico_client import AuthenticatedClient, Client
from portico_client.api.auth import issue_token, logout, refresh_token, sign_up
from portico_client.api.users import get_current_user, list_users, update_user
from portico_client.models import (
    IssueTokenRequest,
    IssueTokenResponse,
    ListUsersResponse,
    LogoutRequest,
    Problem,
    RefreshTokenRequest,
    RefreshTokenResponse,
    SignUpRequest,
    SignUpResponse,
    User,
    UserUpdatePatch,
)
from portico_client.types import Response

T = TypeVar("T")


@dataclasses.dataclass
class Summary:
    """What the walkthrough saw: the same keys as the TypeScript walkthrough's JSON."""

    user_id: str
    email: str
    sign_up_status: int
    me_id: str
    etag_before: str
    etag_after: str
    display_name: str
    stale_update: dict[str, Any]
    pages: int
    listed_ids: list[str]
    refreshed: bool
    logout_status: int
    after_logout: dict[str, Any]


def expect(response: Response[Any], wanted: type[T]) -> T:
    """The parsed answer when it is a ``wanted``; otherwise fail with the problem's text."""
    if not isinstance(response.parsed, wanted):
        raise RuntimeError(f"{response.status_code}: {response.content.decode(errors='replace')}")
    return response.parsed


def problem_of(response: Response[Any]) -> dict[str, Any]:
    """A problem+json answer, read as the typed ``Problem`` model."""
    problem = response.parsed
    if not isinstance(problem, Problem):
        raise RuntimeError(f"expected a problem, got {response.status_code}: {response.content!r}")
    return {
        "status": problem.status,
        "type": problem.type_,
        "title": problem.title,
        "detail": problem.detail,
        "request_id": problem.request_id,
    }


def log_in(client: Client, email: str, password: str) -> IssueTokenResponse:
    """The OAuth2 password grant: the client sends it as a form, as RFC 6749 says."""
    grant = IssueTokenRequest(grant_type="password", username=email, password=password)
    return expect(issue_token.sync_detailed(client=client, body=grant), IssueTokenResponse)


def walkthrough(base_url: str, *, admin_email: str, admin_password: str) -> Summary:
    with contextlib.ExitStack() as clients:  # each client closes its connections at the end
        return _walk(clients, base_url, admin_email=admin_email, admin_password=admin_password)


def _walk(
    clients: contextlib.ExitStack, base_url: str, *, admin_email: str, admin_password: str
) -> Summary:
    anonymous = clients.enter_context(Client(base_url=base_url))
    email = f"py-{uuid.uuid4().hex[:12]}@example.com"
    password = secrets.token_urlsafe(16)
    signed_up = sign_up.sync_detailed(
        client=anonymous,
        body=SignUpRequest(
            email=email,
            display_name="Ada",
            password=password,
            idempotency_key=str(uuid.uuid4()),  # send the same one again to retry safely
        ),
    )
    created = expect(signed_up, SignUpResponse)
    tokens = log_in(anonymous, email, password)
    me = clients.enter_context(AuthenticatedClient(base_url=base_url, token=tokens.access_token))

    read = get_current_user.sync_detailed(client=me)
    user = expect(read, User)
    etag = read.headers["etag"]
    renamed = update_user.sync_detailed(
        UUID(user.id), client=me, body=UserUpdatePatch(display_name="Ada King"), if_match=etag
    )
    after = expect(renamed, User)
    stale = update_user.sync_detailed(  # the old ETag again: someone changed it since (412)
        UUID(user.id), client=me, body=UserUpdatePatch(display_name="Ada B."), if_match=etag
    )

    admin_tokens = log_in(anonymous, admin_email, admin_password)
    admin = clients.enter_context(
        AuthenticatedClient(base_url=base_url, token=admin_tokens.access_token)
    )
    listed: list[str] = []
    pages = 0
    page_token = ""
    while True:
        page = list_users.sync(client=admin, page_size=2, page_token=page_token)
        if not isinstance(page, ListUsersResponse):
            raise RuntimeError(f"listing users failed: {page}")
        pages += 1
        listed += [u.id for u in page.users]
        page_token = page.next_page_token
        if not page_token:
            break

    rotated = expect(
        refresh_token.sync_detailed(
            client=anonymous, body=RefreshTokenRequest(refresh_token=tokens.refresh_token)
        ),
        RefreshTokenResponse,
    )
    me = clients.enter_context(AuthenticatedClient(base_url=base_url, token=rotated.access_token))
    ended = logout.sync_detailed(client=me, body=LogoutRequest(refresh_token=rotated.refresh_token))
    refused = get_current_user.sync_detailed(client=me)  # the session is gone: 401

    return Summary(
        user_id=created.user_id,
        email=created.email,
        sign_up_status=int(signed_up.status_code),
        me_id=user.id,
        etag_before=etag,
        etag_after=renamed.headers["etag"],
        display_name=after.display_name,
        stale_update=problem_of(stale),
        pages=pages,
        listed_ids=listed,
        refreshed=rotated.refresh_token != tokens.refresh_token,
        logout_status=int(ended.status_code),
        after_logout=problem_of(refused),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-email", default="admin@example.com")
    parser.add_argument("--admin-password", required=True)
    args = parser.parse_args()
    summary = walkthrough(
        args.base_url, admin_email=args.admin_email, admin_password=args.admin_password
    )
    print(json.dumps(dataclasses.asdict(summary), indent=2))


if __name__ == "__main__":
    main()
