"""DestinationRules: which one Istio applies to a host, and whether it defines a rollout's subsets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.routing.hosts import fqdn, host_matches, service_namespace
from airflow_canary.routing.values import RouteTarget, RoutingError


def defined_subsets(destination_rule: Mapping[str, Any]) -> list[str]:
    """Names of the subsets the DestinationRule defines, in document order."""
    spec = destination_rule.get("spec")
    subsets = spec.get("subsets") if isinstance(spec, Mapping) else None
    if not isinstance(subsets, list):
        return []
    return [s["name"] for s in subsets if isinstance(s, Mapping) and isinstance(s.get("name"), str)]


def validate_subsets(destination_rule: Mapping[str, Any], target: RouteTarget) -> None:
    """Raise RoutingError unless the stable and canary subsets are both defined."""
    defined = defined_subsets(destination_rule)
    missing = [s for s in (target.stable_subset, target.canary_subset) if s not in defined]
    if not missing:
        return
    metadata = destination_rule.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    listed = ", ".join(repr(s) for s in defined) or "none"
    which = " and ".join(repr(s) for s in missing)
    noun = "subsets" if len(missing) > 1 else "subset"
    raise RoutingError(
        f"DestinationRule {name or '<unnamed>'!r} does not define {noun} {which}; "
        f"its subsets are: {listed}"
    )


#: Istio's default mesh root namespace (``meshConfig.rootNamespace``).
ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class ResolvedDestinationRule:
    """The DestinationRule(s) Istio applies to a host for one client namespace.

    Several rules for the same host in the same namespace are merged by Istio (oldest first,
    the first definition of a subset wins); ``names`` lists them in that order.
    """

    namespace: str
    names: tuple[str, ...]
    host: str
    subsets: tuple[str, ...]
    documents: tuple[Mapping[str, Any], ...] = field(repr=False, compare=False)

    def require(self, subsets: Iterable[str]) -> None:
        """Raise RoutingError naming any of ``subsets`` this rule does not define."""
        missing = [s for s in subsets if s not in self.subsets]
        if not missing:
            return
        noun = "subsets" if len(missing) > 1 else "subset"
        raise RoutingError(
            f"DestinationRule {', '.join(self.names)!r} in namespace {self.namespace!r} (host "
            f"{self.host}) does not define {noun} {' and '.join(map(repr, missing))}; its "
            f"subsets are: {', '.join(map(repr, self.subsets)) or 'none'}"
        )

    def as_document(self) -> dict[str, Any]:
        """One DestinationRule-shaped document with the merged subsets, for ``validate_subsets``."""
        merged: list[Any] = []
        seen: set[str] = set()
        for doc in self.documents:
            for subset in (doc.get("spec") or {}).get("subsets") or []:
                if isinstance(subset, Mapping) and subset.get("name") not in seen:
                    seen.add(str(subset.get("name")))
                    merged.append(subset)
        return {
            "metadata": {"name": ", ".join(self.names), "namespace": self.namespace},
            "spec": {"host": self.host, "subsets": merged},
        }


def lookup_namespaces(
    host: str, client_namespace: str, root_namespace: str = ROOT_NAMESPACE
) -> list[str]:
    """The namespaces Istio searches for a host's DestinationRule, in order.

    Istio's ``PushContext.destinationRule`` (pilot/pkg/model/push_context.go): the client's
    (here the VirtualService's) namespace, then the namespace of the service ``host`` names,
    then the mesh root namespace.
    """
    order = [client_namespace]
    service_ns = service_namespace(fqdn(host, client_namespace))
    if service_ns is not None:
        order.append(service_ns)
    order.append(root_namespace)
    return list(dict.fromkeys(order))


def find_destination_rule(
    host: str,
    client_namespace: str,
    rules: Iterable[Mapping[str, Any]],
    root_namespace: str = ROOT_NAMESPACE,
) -> ResolvedDestinationRule | None:
    """The DestinationRule Istio would apply to ``host`` for a client in ``client_namespace``.

    Follows ``PushContext.destinationRule``: every rule in the client's own namespace first
    (for a client in the root namespace, only its private rules); then rules in the service's
    namespace and then the root namespace, each only if exported to the client (``exportTo``
    empty or ``*`` or naming the client's namespace; ``.`` or the owner's own namespace alone
    keep a rule private, ``~`` hides it). Within a namespace the most specific host wins
    (exact, then the longest wildcard). ``rules`` may hold rules of any namespaces.
    """
    wanted = fqdn(host, client_namespace)
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for rule in rules:
        metadata = rule.get("metadata") or {}
        namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
        by_namespace.setdefault(str(namespace or "default"), []).append(rule)

    def pick(namespace: str, visible: Any) -> ResolvedDestinationRule | None:
        candidates = [r for r in by_namespace.get(namespace, []) if visible(r, namespace)]
        return _most_specific(wanted, namespace, candidates)

    if client_namespace != root_namespace:
        found = pick(client_namespace, lambda r, ns: True)
    else:
        found = pick(root_namespace, lambda r, ns: _private(r, ns))
    if found is not None:
        return found
    for namespace in lookup_namespaces(host, client_namespace, root_namespace)[1:]:
        found = pick(namespace, lambda r, ns: _exported_to(r, ns, client_namespace))
        if found is not None:
            return found
    return None


def _export_to(rule: Mapping[str, Any]) -> list[str]:
    raw = (rule.get("spec") or {}).get("exportTo") or []
    return [str(x) for x in raw] if isinstance(raw, list) else []


def _private(rule: Mapping[str, Any], namespace: str) -> bool:
    export_to = set(_export_to(rule))
    return len(export_to) == 1 and export_to <= {".", namespace}


def _exported_to(rule: Mapping[str, Any], namespace: str, client_namespace: str) -> bool:
    export_to = _export_to(rule)
    if not export_to:
        return True  # the mesh default, defaultDestinationRuleExportTo, is "*"
    if _private(rule, namespace) or "~" in export_to:
        return False
    return "*" in export_to or client_namespace in export_to


def _most_specific(
    wanted: str, namespace: str, rules: list[Mapping[str, Any]]
) -> ResolvedDestinationRule | None:
    scored: dict[str, list[Mapping[str, Any]]] = {}
    for rule in rules:
        raw = (rule.get("spec") or {}).get("host")
        if not isinstance(raw, str):
            continue
        pattern = fqdn(raw, namespace)
        if host_matches(pattern, wanted):
            scored.setdefault(pattern, []).append(rule)
    if not scored:
        return None
    best = wanted if wanted in scored else max(scored, key=len)
    chosen = sorted(scored[best], key=_age)
    subsets: list[str] = []
    for rule in chosen:
        for name in defined_subsets(rule):
            if name not in subsets:
                subsets.append(name)
    return ResolvedDestinationRule(
        namespace=namespace,
        names=tuple(str((r.get("metadata") or {}).get("name")) for r in chosen),
        host=best,
        subsets=tuple(subsets),
        documents=tuple(chosen),
    )


def _age(rule: Mapping[str, Any]) -> tuple[str, str]:
    metadata = rule.get("metadata") or {}
    return (str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or ""))
