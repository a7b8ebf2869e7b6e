"""Gateway API routing in the local data plane: HTTPRoute rules compiled into routes, in Gateway API's precedence order.

What a request matches, and in which order, follows ``apis/v1/httproute_types.go`` of
kubernetes-sigs/gateway-api (v1.6):

- A route attaches to a ``Gateway`` parent (which must exist, and whose listener's
  ``allowedRoutes.namespaces.from`` must admit the route's namespace: ``Same`` by default, or
  ``All``) and then serves the requests whose Host matches its ``hostnames`` (exact, or a
  ``*.`` suffix wildcard; none means every host the listener takes, intersected with the
  listener's own ``hostname``). A route whose parent is a ``Service`` (GAMMA, a mesh route)
  serves the requests addressed to that Service and ignores ``hostnames``.
- Across all routes for a host, a more specific hostname wins (longest matching exact hostname,
  then longest matching hostname); then, per match: an ``Exact`` path, the longest
  ``PathPrefix``, a method, the most header matches, the most query-param matches; ties go to
  the oldest route (``creationTimestamp``), then ``namespace/name`` alphabetically, then rule
  and match order. ``RegularExpression`` paths (implementation-specific) rank after every
  ``Exact`` and ``PathPrefix`` path.
- ``backendRefs`` weights are relative (``weight / sum``), default 1; weight 0 sends nothing
  (a lone backend with weight 0 too). A backend that is not a Service, names a Service that
  does not exist, or sits in another namespace without a ``ReferenceGrant`` allowing it is
  invalid: its share of the requests gets 500, as the spec requires; a rule without backends
  answers 500.
- ``RequestMirror`` filters mirror ``percent`` (0..100) or ``fraction`` (numerator/denominator)
  of the matched requests to their ``backendRef`` Service.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_canary.local.dataplane.routes import Mirror, RequestView, Route, Target

GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_NAMESPACE = "default"


# -- matches ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueMatch:
    """A Gateway API ``Exact`` or ``RegularExpression`` match (regexes match the whole value, as Envoy's RE2 does)."""

    kind: str
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any], where: str) -> ValueMatch:
        kind = str(spec.get("type") or "Exact")
        value = str(spec.get("value", ""))
        if kind == "RegularExpression":
            try:
                return cls(kind, value, re.compile(value))
            except re.error as exc:
                raise ValueError(f"{where}: invalid regular expression {value!r}: {exc}") from exc
        if kind != "Exact":
            raise ValueError(
                f"{where}: match type {kind!r} is not supported (Exact, RegularExpression)"
            )
        return cls(kind, value)

    def matches(self, actual: str | None) -> bool:
        if actual is None:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(actual) is not None
        return actual == self.value


def path_prefix_matches(prefix: str, path: str) -> bool:
    """Gateway API ``PathPrefix``: element-wise, so ``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class HTTPRouteMatch:
    """One entry of a rule's ``matches``: path, method, headers and query params all must hold."""

    path_type: str = "PathPrefix"
    path: str = "/"
    path_pattern: re.Pattern[str] | None = None
    method: str | None = None
    headers: tuple[tuple[str, ValueMatch], ...] = ()
    query_params: tuple[tuple[str, ValueMatch], ...] = ()

    @classmethod
    def parse(cls, spec: Mapping[str, Any], where: str) -> HTTPRouteMatch:
        path = spec.get("path") or {}
        path_type = str(path.get("type") or "PathPrefix")
        value = str(path.get("value") or "/")
        pattern = None
        if path_type == "RegularExpression":
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"{where}.path: invalid regular expression {value!r}: {exc}"
                ) from exc
        elif path_type not in ("Exact", "PathPrefix"):
            raise ValueError(f"{where}.path: type {path_type!r} is not a Gateway API path match")
        return cls(
            path_type=path_type,
            path=value,
            path_pattern=pattern,
            method=str(spec["method"]) if spec.get("method") else None,
            headers=tuple(
                (str(h.get("name", "")).lower(), ValueMatch.parse(h, f"{where}.headers[{i}]"))
                for i, h in enumerate(spec.get("headers") or [])
            ),
            query_params=tuple(
                (str(q.get("name", "")), ValueMatch.parse(q, f"{where}.queryParams[{i}]"))
                for i, q in enumerate(spec.get("queryParams") or [])
            ),
        )

    def matches(self, request: RequestView) -> bool:
        if self.path_type == "Exact":
            if request.path != self.path:
                return False
        elif self.path_type == "PathPrefix":
            if not path_prefix_matches(self.path, request.path):
                return False
        else:
            assert self.path_pattern is not None
            if self.path_pattern.fullmatch(request.path) is None:
                return False
        if self.method is not None and request.method.upper() != self.method:
            return False
        for name, match in self.headers:
            if not match.matches(request.headers.get(name)):
                return False
        for name, match in self.query_params:
            if not match.matches(request.query.get(name)):
                return False
        return True

    def precedence(self) -> tuple[int, ...]:
        """Sort key, smallest first: Exact path, longest PathPrefix, method, most headers, most query params."""
        rank = {"Exact": 0, "PathPrefix": 1}.get(self.path_type, 2)
        return (
            rank,
            -len(self.path) if rank == 1 else 0,
            0 if self.method is not None else 1,
            -len(self.headers),
            -len(self.query_params),
        )


# -- hostnames -------------------------------------------------------------------------------------


def hostname_matches(pattern: str, host: str) -> bool:
    """``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not ``example.com``."""
    pattern, host = pattern.lower(), host.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def hostnames_intersect(a: str, b: str) -> bool:
    """Whether two hostnames (either possibly a wildcard) can match one host."""
    if a.startswith("*.") and b.startswith("*."):
        return a.endswith(b[1:]) or b.endswith(a[1:]) or a == b
    if a.startswith("*."):
        return hostname_matches(a, b)
    if b.startswith("*."):
        return hostname_matches(b, a)
    return a.lower() == b.lower()


# -- compiled routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One (route, rule, match) with what its precedence depends on."""

    route: Route
    match: HTTPRouteMatch
    hostnames: tuple[str, ...] | None  # None: mesh (GAMMA) route, hostnames ignored
    tie: tuple[str, str, int, int]  # creationTimestamp, namespace/name, rule, match


@dataclass(frozen=True)
class _Listener:
    hostname: str | None
    allowed_from: str  # Same | All | Selector
    namespace: str


class GatewayRoutes:
    """Every HTTPRoute of a store state, compiled; answers which routes serve a request's host."""

    def __init__(
        self,
        httproutes: Iterable[Mapping[str, Any]],
        gateways: Iterable[Mapping[str, Any]],
        reference_grants: Iterable[Mapping[str, Any]],
        services: Mapping[str, Any],
    ) -> None:
        """``services``: FQDN (``name.ns.svc.cluster.local``) -> any value, the Services that exist."""
        self.errors: dict[str, str] = {}
        self._services = services
        self._grants = [g for g in reference_grants if isinstance(g.get("spec"), Mapping)]
        self._listeners: dict[tuple[str, str], tuple[_Listener, ...]] = {}
        for gateway in gateways:
            meta = gateway.get("metadata") or {}
            ns = meta.get("namespace", DEFAULT_NAMESPACE)
            listeners = []
            for listener in (gateway.get("spec") or {}).get("listeners") or []:
                allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get(
                    "from"
                ) or "Same"
                listeners.append(_Listener(listener.get("hostname"), str(allowed), ns))
            self._listeners[(ns, str(meta.get("name")))] = tuple(listeners)
        self._gateway_entries: list[_Entry] = []
        self._mesh_entries: dict[str, list[_Entry]] = {}
        for route in httproutes:
            meta = route.get("metadata") or {}
            name = f"{meta.get('namespace', DEFAULT_NAMESPACE)}/{meta.get('name')}"
            try:
                self._compile(route)
            except (ValueError, TypeError, KeyError) as exc:
                self.errors[name] = str(exc)
        self._cache: dict[str, tuple[Route, ...] | None] = {}

    # -- lookup ------------------------------------------------------------------------------------

    def routes_for(self, fqdn: str, authority: str) -> tuple[Route, ...] | None:
        """Routes serving a request, in precedence order; None when no HTTPRoute takes the host.

        ``fqdn`` is the Host expanded as a Service name; ``authority`` the Host without port.
        """
        key = f"{fqdn}|{authority}"
        if key not in self._cache:
            self._cache[key] = self._lookup(fqdn, authority.lower())
        return self._cache[key]

    def _lookup(self, fqdn: str, host: str) -> tuple[Route, ...] | None:
        mesh = self._mesh_entries.get(fqdn)
        if mesh:
            return tuple(e.route for e in sorted(mesh, key=lambda e: (e.match.precedence(), e.tie)))
        keyed = []
        for entry in self._gateway_entries:
            assert entry.hostnames is not None
            if not entry.hostnames:
                keyed.append(((0, 0), entry))
                continue
            matching = [h for h in entry.hostnames if hostname_matches(h, host)]
            if not matching:
                continue
            exact = max((len(h) for h in matching if not h.startswith("*.")), default=0)
            keyed.append(((-exact, -max(len(h) for h in matching)), entry))
        if not keyed:
            return None
        keyed.sort(key=lambda ke: (ke[0], ke[1].match.precedence(), ke[1].tie))
        return tuple(entry.route for _, entry in keyed)

    # -- compiling ---------------------------------------------------------------------------------

    def _compile(self, route: Mapping[str, Any]) -> None:
        meta = route.get("metadata") or {}
        ns = str(meta.get("namespace", DEFAULT_NAMESPACE))
        name = str(meta.get("name"))
        spec = route.get("spec") or {}
        created = str(meta.get("creationTimestamp") or "")
        gateway_hostnames: list[str] | None = None
        mesh_parents: list[str] = []
        for parent in spec.get("parentRefs") or []:
            group = parent.get("group", GATEWAY_GROUP)
            kind = parent.get("kind", "Gateway")
            parent_ns = str(parent.get("namespace") or ns)
            if group == "" and kind == "Service":
                mesh_parents.append(f"{parent.get('name')}.{parent_ns}.svc.cluster.local")
            elif group == GATEWAY_GROUP and kind == "Gateway":
                accepted = self._attach(parent, parent_ns, ns, spec.get("hostnames") or [])
                if accepted is not None:
                    gateway_hostnames = (gateway_hostnames or []) + accepted
        # Compiled whole before any of it serves: a route with one bad match is not served at all.
        mesh_entries: list[tuple[str, _Entry]] = []
        gateway_entries: list[_Entry] = []
        for rule_index, rule in enumerate(spec.get("rules") or []):
            compiled = self._compile_rule(rule, ns, f"{ns}/{name}", rule_index)
            matches = rule.get("matches") or [{}]
            for match_index, match in enumerate(matches):
                parsed = HTTPRouteMatch.parse(
                    match or {}, f"HTTPRoute {ns}/{name} rules[{rule_index}].matches[{match_index}]"
                )
                tie = (created, f"{ns}/{name}", rule_index, match_index)
                single = Route(
                    name=compiled.name,
                    matches=(parsed,),
                    targets=compiled.targets,
                    cum_weights=compiled.cum_weights,
                    mirrors=compiled.mirrors,
                    lone_takes_all=False,
                    no_backend_status=500,
                )
                for fqdn in mesh_parents:
                    mesh_entries.append((fqdn, _Entry(single, parsed, None, tie)))
                if gateway_hostnames is not None:
                    hostnames = tuple(dict.fromkeys(gateway_hostnames))
                    gateway_entries.append(_Entry(single, parsed, hostnames, tie))
        for fqdn, entry in mesh_entries:
            self._mesh_entries.setdefault(fqdn, []).append(entry)
        self._gateway_entries += gateway_entries

    def _attach(
        self, parent: Mapping[str, Any], gateway_ns: str, route_ns: str, hostnames: list[str]
    ) -> list[str] | None:
        """The route hostnames the Gateway's listeners accept ([] = any host), or None if not attached."""
        listeners = self._listeners.get((gateway_ns, str(parent.get("name"))))
        if not listeners:
            return None
        accepted: list[str] = []
        attached = False
        for listener in listeners:
            if listener.allowed_from == "Same" and listener.namespace != route_ns:
                continue
            if listener.allowed_from not in ("Same", "All"):
                continue  # namespace selectors are not evaluated by the local mesh
            if listener.hostname is None:
                if not hostnames:
                    return []
                accepted += hostnames
                attached = True
            elif not hostnames:
                accepted.append(listener.hostname)
                attached = True
            else:
                kept = [h for h in hostnames if hostnames_intersect(h, listener.hostname)]
                # The more specific of the two is what a request must match.
                accepted += [
                    listener.hostname
                    if h.startswith("*.") and not listener.hostname.startswith("*.")
                    else h
                    for h in kept
                ]
                attached = attached or bool(kept)
        return accepted if attached else None

    def _compile_rule(self, rule: Mapping[str, Any], ns: str, route: str, index: int) -> Route:
        targets: list[Target] = []
        weights: list[int] = []
        for ref_index, ref in enumerate(rule.get("backendRefs") or []):
            weight = ref.get("weight", 1)
            weights.append(int(weight if weight is not None else 1))
            targets.append(
                self._backend(ref, ns, f"{route} rules[{index}].backendRefs[{ref_index}]")
            )
        mirrors = []
        for f_index, filt in enumerate(rule.get("filters") or []):
            if filt.get("type") != "RequestMirror":
                continue
            spec = filt.get("requestMirror") or {}
            target = self._backend(
                spec.get("backendRef") or {}, ns, f"{route} rules[{index}].filters[{f_index}]"
            )
            if target.error:
                continue  # an invalid mirror backend is dropped, the rule still serves
            mirrors.append(Mirror(target, _mirror_percent(spec)))
        name = rule.get("name") or f"{route} rules[{index}]"
        return Route(
            name=str(name),
            matches=(),
            targets=tuple(targets),
            cum_weights=tuple(itertools.accumulate(weights)),
            mirrors=tuple(mirrors),
        )

    def _backend(self, ref: Mapping[str, Any], route_ns: str, where: str) -> Target:
        group, kind = ref.get("group", ""), ref.get("kind", "Service")
        name = str(ref.get("name", ""))
        ns = str(ref.get("namespace") or route_ns)
        if group != "" or kind != "Service":
            return Target(
                ns, name, None, f"{where}: backend kind {group or 'core'}/{kind} is not supported"
            )
        if f"{name}.{ns}.svc.cluster.local" not in self._services:
            return Target(ns, name, None, f"{where}: Service {ns}/{name} does not exist")
        if ns != route_ns and not self._granted(route_ns, ns, name):
            return Target(
                ns,
                name,
                None,
                f"{where}: no ReferenceGrant in namespace {ns} lets HTTPRoutes of {route_ns} "
                f"reference Service {name} (RefNotPermitted)",
            )
        return Target(ns, name)

    def _granted(self, from_ns: str, to_ns: str, service: str) -> bool:
        for grant in self._grants:
            if (grant.get("metadata") or {}).get("namespace", DEFAULT_NAMESPACE) != to_ns:
                continue
            spec = grant["spec"]
            froms = any(
                f.get("group") == GATEWAY_GROUP
                and f.get("kind") == "HTTPRoute"
                and f.get("namespace") == from_ns
                for f in spec.get("from") or []
            )
            tos = any(
                t.get("group", "") == ""
                and t.get("kind") == "Service"
                and t.get("name") in (None, "", service)
                for t in spec.get("to") or []
            )
            if froms and tos:
                return True
        return False


def _mirror_percent(spec: Mapping[str, Any]) -> float:
    if spec.get("percent") is not None:
        return float(spec["percent"])
    fraction = spec.get("fraction")
    if isinstance(fraction, Mapping):
        denominator = int(fraction.get("denominator", 100) or 100)
        return 100.0 * int(fraction.get("numerator", 0)) / denominator
    return 100.0
