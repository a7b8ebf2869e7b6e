"""Parsing of Kubernetes API requests for the local mesh: Status errors, URL paths, label and field selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.resources import ResourceRegistry, ResourceType
from airflow_canary.local.apiserver.schema import Violation

Obj = dict[str, Any]


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:  # StatusReasonUnknown is "", omitted from the JSON (omitempty)
            del body["reason"]
        if self.details is not None:
            body["details"] = self.details
        return body

    def response(self) -> web.Response:
        return web.json_response(self.status(), status=self.code, headers=self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rtype: ResourceType, name: str, violations: list[Violation]) -> ApiError:
    """422 Invalid in the shape kubectl and the kubernetes client parse (``details.causes``)."""
    qualified = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    summary = ", ".join(str(v) for v in violations)
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        details={
            "name": name,
            "group": rtype.group,
            "kind": rtype.kind,
            "causes": [
                {"reason": v.reason.value, "message": v.message, "field": v.field}
                for v in violations
            ],
        },
    )


@dataclass(frozen=True)
class ResourcePath:
    """A parsed resource URL: ``/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]``."""

    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None = None
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return self.rtype.api_version(self.version)


def parse_resource_path(
    registry: ResourceRegistry, group: str, version: str, segments: list[str]
) -> ResourcePath:
    """Resolve the segments after ``/api/v1`` or ``/apis/G/V``; ApiError 404 when nothing is served there."""

    def lookup(plural: str) -> ResourceType:
        rtype = registry.lookup(group, version, plural)
        if rtype is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({plural} in {gv})",
            )
        return rtype

    if len(segments) >= 3 and segments[0] == "namespaces":
        candidate = registry.lookup(group, version, segments[2])
        if candidate is not None and candidate.namespaced:
            rest = segments[3:]
            if len(rest) > 2:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return ResourcePath(
                candidate,
                version,
                segments[1],
                rest[0] if rest else None,
                rest[1] if len(rest) > 1 else None,
            )
    rtype = lookup(segments[0])
    rest = segments[1:]
    if len(rest) > 2:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if rtype.namespaced and rest:
        raise ApiError(
            404,
            "NotFound",
            f"{rtype.plural} is namespaced: use /namespaces/NAMESPACE/{rtype.plural}/{rest[0]}",
        )
    return ResourcePath(
        rtype, version, None, rest[0] if rest else None, rest[1] if len(rest) > 1 else None
    )


# -- selectors --------------------------------------------------------------------------------

_SET_EXPR = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_EXPR = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = field(default_factory=frozenset)

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    """``app=model,version!=v2,tier in (a,b),!legacy`` -> requirements; ApiError 400 on bad syntax."""
    requirements = []
    for part in _split_selector(text or ""):
        if m := _SET_EXPR.match(part):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            requirements.append(Requirement(m.group(2), m.group(3), values))
        elif m := _EQ_EXPR.match(part):
            op = "notin" if m.group(2) == "!=" else "in"
            requirements.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS.match(part):
            requirements.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise bad_request(
                f"unable to parse requirement {part.strip()!r} of labelSelector {text!r}"
            )
    return requirements


_FIELDS = {
    "metadata.name": lambda o: o["metadata"].get("name", ""),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
}


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,metadata.namespace!=y`` -> (field, equal, value); only the fields served."""
    selectors = []
    for part in [p for p in (text or "").split(",") if p.strip()]:
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(
                f"invalid field selector {part!r}: expected FIELD=VALUE or FIELD!=VALUE"
            )
        if m.group(1) not in _FIELDS:
            raise bad_request(
                f'field label not supported: "{m.group(1)}" (supported: {", ".join(_FIELDS)})'
            )
        selectors.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return selectors


def selected(obj: Obj, labels: list[Requirement], fields: list[tuple[str, bool, str]]) -> bool:
    obj_labels = obj.get("metadata", {}).get("labels") or {}
    if not all(r.matches(obj_labels) for r in labels):
        return False
    return all((_FIELDS[f](obj) == value) == equal for f, equal, value in fields)


def field_manager(request: web.Request) -> str:
    """The write's field manager: ``?fieldManager=``, else the User-Agent up to its first "/"
    (what kube-apiserver records, e.g. "OpenAPI-Generator" for the Python client)."""
    named = request.query.get("fieldManager")
    if named:
        return named
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0] or "unknown"
