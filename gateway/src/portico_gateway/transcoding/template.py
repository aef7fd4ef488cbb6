"""``google.api.http`` path templates → Starlette route paths.

Supported (what grpc-gateway users write in practice): literal segments, ``{field}`` and
``{a.b}`` (one segment), ``{field=*}`` (one segment) and ``{field=**}`` (the rest of the path, as
the last variable). Anything else — ``{name=users/*}``-style sub-templates, ``:verb`` suffixes —
is refused when the gateway starts, with the template in the message, rather than half-served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:=([^}]*))?\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~-]+")


class UnsupportedTemplate(ValueError):  # noqa: N818 (reads as the condition it is)
    """A path template this gateway cannot serve."""


@dataclass(frozen=True, slots=True)
class PathVariable:
    field_path: str  # dotted proto field path, e.g. "user.id"
    param: str  # the Starlette/OpenAPI parameter name, e.g. "user.id" → "user__id"


_ROUTE_VARIABLE = re.compile(r"\{([^}:]+)(:path)?\}")


@dataclass(frozen=True, slots=True)
class PathTemplate:
    template: str
    route_path: str  # Starlette path, e.g. "/v1/users/{id}"
    variables: tuple[PathVariable, ...]

    @property
    def shape(self) -> str:
        """The route path without parameter names: ``/v1/users/{}``. OpenAPI (3.1, "Path
        Templating Matching") holds two paths of one shape to be the same path."""
        return _ROUTE_VARIABLE.sub(lambda m: "{" + (m.group(2) or "") + "}", self.route_path)

    def renamed(self, params: tuple[str, ...]) -> PathTemplate:
        """This template with its route parameters called ``params`` (in order)."""
        names = iter(params)
        route = _ROUTE_VARIABLE.sub(
            lambda m: "{" + next(names) + (m.group(2) or "") + "}", self.route_path
        )
        variables = tuple(
            PathVariable(v.field_path, p) for v, p in zip(self.variables, params, strict=True)
        )
        return PathTemplate(self.template, route, variables)


def parse_template(template: str) -> PathTemplate:
    """Compile ``template``; raise :class:`UnsupportedTemplate` for what we do not serve."""
    if not template.startswith("/"):
        raise UnsupportedTemplate(f"path template must start with '/': {template!r}")
    if ":" in template.rsplit("/", 1)[-1].split("}")[-1]:
        raise UnsupportedTemplate(f"custom verbs (':verb') are not supported: {template!r}")
    segments = template[1:].split("/")
    parts: list[str] = []
    variables: list[PathVariable] = []
    for index, segment in enumerate(segments):
        match = _VARIABLE.fullmatch(segment)
        if match is None:
            if not _LITERAL.fullmatch(segment):
                raise UnsupportedTemplate(f"unsupported segment {segment!r} in {template!r}")
            parts.append(segment)
            continue
        field_path, pattern = match.group(1), match.group(2)
        param = field_path.replace(".", "__")
        if pattern in (None, "*"):
            parts.append("{" + param + "}")
        elif pattern == "**" and index == len(segments) - 1:
            parts.append("{" + param + ":path}")
        else:
            raise UnsupportedTemplate(f"unsupported variable {segment!r} in {template!r}")
        variables.append(PathVariable(field_path, param))
    return PathTemplate(template, "/" + "/".join(parts), tuple(variables))
