"""What both client walkthroughs must have seen, checked against the document and the stack."""

from __future__ import annotations

from typing import Any

import httpx


def success_status(document: dict[str, Any], verb: str, path: str) -> int:
    """The one 2xx status the document gives the operation."""
    codes = [int(c) for c in document["paths"][path][verb]["responses"] if c.startswith("2")]
    assert len(codes) == 1, (verb, path, codes)
    return codes[0]


def all_user_ids(admin: httpx.Client) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = admin.get("/v1/users", params={"page_size": 100, "page_token": token})
        assert page.status_code == 200, page.text
        ids += [user["id"] for user in page.json()["users"]]
        token = page.json()["next_page_token"]
        if not token:
            return ids


def _is_problem(seen: dict[str, Any], status: int) -> None:
    assert seen["status"] == status, seen
    assert seen["type"].startswith("https://"), seen
    assert seen["title"], seen
    assert seen["detail"], seen
    assert seen["request_id"], seen


def check_walkthrough(
    summary: dict[str, Any], document: dict[str, Any], admin: httpx.Client
) -> None:
    """``summary`` (a walkthrough's JSON) matches the document and what the stack holds now."""
    assert summary["sign_up_status"] == success_status(document, "post", "/v1/auth/signup")
    assert summary["me_id"] == summary["user_id"]
    assert summary["email"].endswith("@example.com")
    assert summary["etag_before"], summary
    assert summary["etag_after"] not in ("", summary["etag_before"]), summary
    assert summary["display_name"] == "Ada King"
    _is_problem(summary["stale_update"], 412)  # If-Match with the ETag before the rename
    _is_problem(summary["after_logout"], 401)  # the access token died with its session
    assert summary["logout_status"] == success_status(document, "post", "/v1/auth/logout")
    assert summary["refreshed"] is True

    # Paged through every user, each once (nobody signed up since the walkthrough listed them).
    listed = summary["listed_ids"]
    assert len(listed) == len(set(listed)), listed
    assert sorted(listed) == sorted(all_user_ids(admin))
    assert summary["user_id"] in listed
    # 2 a page; a full last page may or may not be followed by an empty one
    assert summary["pages"] in {-(-len(listed) // 2), len(listed) // 2 + 1}, summary["pages"]
    assert summary["pages"] >= 2

    # The stack agrees: the rename is stored, under the ETag the client was given.
    stored = admin.get(f"/v1/users/{summary['user_id']}")
    assert stored.status_code == 200, stored.text
    assert stored.json()["display_name"] == "Ada King"
    assert stored.headers["etag"].strip('"') == summary["etag_after"].strip('"')
