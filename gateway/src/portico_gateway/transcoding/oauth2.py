"""The OAuth2 password flow the API offers (RFC 6749 §4.3): its OpenAPI security scheme, and the
two routes whose body may be a form, read by the routes and the OpenAPI document alike."""

from __future__ import annotations

from typing import Any

#: RFC 6749 §4.3 at the auth service's token route; Swagger UI's "Authorize" uses it.
OAUTH2_PASSWORD: dict[str, Any] = {
    "type": "oauth2",
    "description": (
        "Access tokens (JWT, 15 minutes) from the OAuth2 password grant: POST the form"
        " `grant_type=password&username=<email>&password=<password>` to `/v1/auth/token`, then"
        " send `Authorization: Bearer <access_token>`."
    ),
    "flows": {
        "password": {"tokenUrl": "/v1/auth/token", "refreshUrl": "/v1/auth/refresh", "scopes": {}}
    },
}
#: The routes whose body may be a form: the password flow's token and refresh requests.
OAUTH2_FORM_PATHS = frozenset(
    url
    for flow in OAUTH2_PASSWORD["flows"].values()
    for url in (flow["tokenUrl"], flow["refreshUrl"])
)
