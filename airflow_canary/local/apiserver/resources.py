"""The resource types the local mesh API serves: built-in kinds, Istio kinds, and kinds learnt from CRDs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_canary.timestamps import timestamp_or_none

Obj = dict[str, Any]

VERBS_ALL = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
VERBS_SUB = ("get", "patch", "update")


@dataclass(frozen=True)
class Column:
    """One column of ``kubectl get`` output (a meta.k8s.io/v1 Table column)."""

    name: str
    type: str
    cell: Callable[[Obj], Any]
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    """A served resource: its group, versions, names, scope and how it prints."""

    group: str
    versions: tuple[str, ...]
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    #: strategic-merge-patch is only understood for compiled-in kinds, as in the real server.
    strategic_merge: bool = False
    columns: tuple[Column, ...] = ()
    #: The CRD this type was learnt from ('' for built-ins).
    crd_name: str = ""
    storage_version: str = field(default="")

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


# -- printing ---------------------------------------------------------------------------------


def human_age(timestamp: str | None, now: datetime | None = None) -> str:
    """Age like kubectl prints it (``45s``, ``3m20s``, ``5h``, ``2d3h``); ``<unknown>`` if unset."""
    if not timestamp:
        return "<unknown>"
    then = timestamp_or_none(timestamp)
    if then is None:
        return "<invalid>"
    seconds = int(((now or datetime.now(timezone.utc)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _age(obj: Obj) -> str:
    return human_age(obj["metadata"].get("creationTimestamp"))


NAME = Column("Name", "string", _name, "Name must be unique within a namespace.", format="name")
AGE = Column("Age", "string", _age, "CreationTimestamp is the time the object was created.")


def _pod_ready(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or []) or len(statuses)
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated.get("reason"):
            return str(terminated["reason"])
    return str(status.get("phase") or "Pending")


def _pod_restarts(pod: Obj) -> int:
    return sum(
        int(s.get("restartCount") or 0)
        for s in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _deploy_ready(dep: Obj) -> str:
    status = dep.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(dep.get('spec') or {}).get('replicas', 1)}"


def _svc_ports(svc: Obj) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _selector(obj: Obj) -> str:
    sel = (obj.get("spec") or {}).get("selector") or {}
    sel = sel.get("matchLabels", sel) if isinstance(sel, dict) else {}
    return ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>"


def json_path_cell(path: str) -> Callable[[Obj], Any]:
    """Cell of a CRD additionalPrinterColumn: a simple ``.a.b`` path, arrays printed as JSON."""
    parts = [p for p in path.strip().lstrip("$").split(".") if p]

    def cell(obj: Obj) -> Any:
        value: Any = obj
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        if isinstance(value, (list, dict)):
            return json.dumps(value, separators=(",", ":"))
        return value

    return cell


# -- built-in types ---------------------------------------------------------------------------

_ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_ISTIO_CATEGORIES = ("istio-io", "networking-istio-io")

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        ("v1",),
        "namespaces",
        "namespace",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status",),
        strategic_merge=True,
        columns=(
            NAME,
            Column("Status", "string", lambda o: (o.get("status") or {}).get("phase", "Active")),
            AGE,
        ),
    ),
    ResourceType(
        "",
        ("v1",),
        "services",
        "service",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
        strategic_merge=True,
        columns=(
            NAME,
            Column("Type", "string", lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
            Column(
                "Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")
            ),
            Column("External-IP", "string", lambda o: "<none>"),
            Column("Port(s)", "string", _svc_ports),
            AGE,
            Column("Selector", "string", _selector, priority=1),
        ),
    ),
    ResourceType(
        "",
        ("v1",),
        "pods",
        "pod",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status",),
        strategic_merge=True,
        columns=(
            NAME,
            Column("Ready", "string", _pod_ready),
            Column("Status", "string", _pod_status),
            Column("Restarts", "integer", _pod_restarts),
            AGE,
            Column(
                "IP", "string", lambda o: (o.get("status") or {}).get("podIP", "<none>"), priority=1
            ),
            Column(
                "Port",
                "string",
                lambda o: (o["metadata"].get("annotations") or {}).get(
                    "mesh.airflow-canary.io/port", "<none>"
                ),
                priority=1,
            ),
        ),
    ),
    ResourceType(
        "apps",
        ("v1",),
        "deployments",
        "deployment",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=("status", "scale"),
        strategic_merge=True,
        columns=(
            NAME,
            Column("Ready", "string", _deploy_ready),
            Column(
                "Up-to-date", "integer", lambda o: (o.get("status") or {}).get("updatedReplicas", 0)
            ),
            Column(
                "Available",
                "integer",
                lambda o: (o.get("status") or {}).get("availableReplicas", 0),
            ),
            AGE,
            Column("Selector", "string", _selector, priority=1),
        ),
    ),
    ResourceType(
        "apiextensions.k8s.io",
        ("v1",),
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources=("status",),
        columns=(
            NAME,
            Column("Created At", "string", lambda o: o["metadata"].get("creationTimestamp")),
        ),
    ),
    ResourceType(
        "networking.istio.io",
        _ISTIO_VERSIONS,
        "virtualservices",
        "virtualservice",
        "VirtualService",
        short_names=("vs",),
        categories=_ISTIO_CATEGORIES,
        subresources=("status",),
        columns=(
            NAME,
            Column("Gateways", "string", json_path_cell(".spec.gateways")),
            Column("Hosts", "string", json_path_cell(".spec.hosts")),
            AGE,
        ),
    ),
    ResourceType(
        "networking.istio.io",
        _ISTIO_VERSIONS,
        "destinationrules",
        "destinationrule",
        "DestinationRule",
        short_names=("dr",),
        categories=_ISTIO_CATEGORIES,
        subresources=("status",),
        columns=(NAME, Column("Host", "string", json_path_cell(".spec.host")), AGE),
    ),
)

GROUP_PREFERRED = {
    "": "v1",
    "apps": "v1",
    "apiextensions.k8s.io": "v1",
    "networking.istio.io": "v1",
}


def type_from_crd(crd: Obj) -> ResourceType:
    """The resource type a CustomResourceDefinition defines (served versions only)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    columns: list[Column] = [NAME]
    first = served[0] if served else {}
    for col in first.get("additionalPrinterColumns") or []:
        if col.get("jsonPath") == ".metadata.creationTimestamp":
            continue
        columns.append(
            Column(
                col["name"],
                "string" if col.get("type") == "date" else col.get("type", "string"),
                json_path_cell(col.get("jsonPath", "")),
                col.get("description", ""),
                int(col.get("priority", 0)),
            )
        )
    columns.append(AGE)
    storage = next(
        (v["name"] for v in served if v.get("storage")), served[0]["name"] if served else ""
    )
    return ResourceType(
        group=spec.get("group", ""),
        versions=tuple(v["name"] for v in served),
        plural=names.get("plural", ""),
        singular=names.get("singular") or names.get("kind", "").lower(),
        kind=names.get("kind", ""),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        subresources=tuple(
            k for k in ("status", "scale") if k in (first.get("subresources") or {})
        ),
        columns=tuple(columns),
        crd_name=(crd.get("metadata") or {}).get("name", ""),
        storage_version=storage,
    )


class ResourceRegistry:
    """Lookup of served resource types by (group, version, plural); CRDs add and replace types."""

    def __init__(self) -> None:
        self._builtin = {(t.group, t.plural): t for t in BUILTIN_TYPES}
        self._types: dict[tuple[str, str], ResourceType] = dict(self._builtin)

    def add_crd(self, crd: Obj) -> ResourceType:
        rtype = type_from_crd(crd)
        self._types[(rtype.group, rtype.plural)] = rtype
        return rtype

    def remove_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        if key in self._builtin:
            # Istio kinds stay served (with the built-in check) after their CRD is deleted.
            self._types[key] = self._builtin[key]
        else:
            self._types.pop(key, None)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rtype = self._types.get((group, plural))
        return rtype if rtype is not None and version in rtype.versions else None

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        return next((t for t in self._types.values() if t.group == group and t.kind == kind), None)

    def types(self) -> Iterator[ResourceType]:
        return iter(sorted(self._types.values(), key=lambda t: (t.group, t.plural)))

    def groups(self) -> dict[str, list[str]]:
        """Group -> served versions, the preferred version first."""
        found: dict[str, list[str]] = {}
        for rtype in self.types():
            versions = found.setdefault(rtype.group, [])
            for version in rtype.versions:
                if version not in versions:
                    versions.append(version)
        for group, versions in found.items():
            preferred = GROUP_PREFERRED.get(group)
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
        return found
