"""Route surgery on Gateway API HTTPRoute documents: weights, header routes, mirrors, promote, rollback.

A Gateway API rollout moves traffic between two Services, stable (e.g. ``model-v1``) and canary
(``model-v2``), referenced as ``backendRefs`` of an HTTPRoute (``gateway.networking.k8s.io/v1``),
whether the route's parent is a Gateway or, as a mesh (GAMMA) route, a Service. The rollout
manages every rule whose ``backendRefs`` name the stable or canary Service (or the rules
``ServiceTarget.rule_names`` lists); weights, promotion and rollback change all of them in one
document, so one write moves the whole route. Every other rule and field is kept verbatim.

Semantics follow ``apis/v1/httproute_types.go`` and ``shared_types.go`` of
kubernetes-sigs/gateway-api (v1.6): backend weights are relative (``weight / sum``), default
1, integers 0..1,000,000; weight 0 sends nothing; a rule's matches are ranked by specificity,
not by position, so the product's header rule copies each managed match and adds its header
(one more header match wins); a ``RequestMirror`` filter takes an integer ``percent`` 0..100 or a
``fraction`` (``numerator``/``denominator``, default 100), never both; neither means 100%.

Every function takes the whole object as returned by the Kubernetes API and returns a new one;
the input is never mutated. Rollback needs nothing but the route: it moves every rule's canary
weight (managed or not) onto the stable Service.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from airflow_canary.names import namespace_name, service_name
from airflow_canary.routing.values import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RoutingError,
    product_route_name,
    validate_mirror_percent,
    validate_weight,
)

Document = dict[str, Any]
# A fraction's numerator and denominator are int32; a millionth of a percent is finer than any
# mirror needs and keeps both far inside that range.
_MAX_FRACTION_DENOMINATOR = 10**6

GROUP = "gateway.networking.k8s.io"
#: The largest backendRef weight the HTTPRoute CRD admits.
MAX_BACKEND_WEIGHT = 1_000_000
#: HTTPRoute CRD limits: rules per route, matches per route (CEL), header matches per match.
MAX_RULES = 16
MAX_MATCHES = 128
MAX_HEADER_MATCHES = 16
_DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}


def _name(what: str, value: object) -> str:
    return service_name(what, value, RoutingError)


@dataclass(frozen=True)
class ServiceTarget:
    """Which Services a Gateway API rollout moves traffic between, and optionally which rules.

    ``stable_service`` and ``canary_service`` are Service names; ``namespace`` is theirs when it
    differs from the HTTPRoute's (then a ReferenceGrant must allow the reference).
    ``rule_names`` narrows the managed rules to those named (by ``name``, or ``rules[i]``); a rule
    sending to the Services that is not listed makes every traffic move refuse.
    """

    stable_service: str = "model-v1"
    canary_service: str = "model-v2"
    namespace: str | None = None
    rule_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _name("stable_service", self.stable_service)
        _name("canary_service", self.canary_service)
        if self.stable_service == self.canary_service:
            raise RoutingError(
                f"stable_service and canary_service must differ, both are {self.stable_service!r}"
            )
        if self.namespace is not None:
            namespace_name("backend_namespace", self.namespace, RoutingError)
        if self.rule_names is not None:
            names = (
                (self.rule_names,) if isinstance(self.rule_names, str) else tuple(self.rule_names)
            )
            if not names or not all(isinstance(n, str) and n for n in names):
                raise RoutingError(
                    f"rule_names must list rule names (or 'rules[0]'), got {self.rule_names!r}"
                )
            if any(n.startswith(PRODUCT_ROUTE_PREFIX) for n in names):
                raise RoutingError(
                    f"rule_names must name your rules, not the product's header rules "
                    f"({PRODUCT_ROUTE_PREFIX}*), got {list(names)}"
                )
            object.__setattr__(self, "rule_names", names)


def validate_backend_weight(weight: object, where: str = "weight") -> int:
    """``weight`` as an int 0..1,000,000 (the HTTPRoute CRD's range); RoutingError naming it otherwise."""
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise RoutingError(f"{where} must be an integer 0..{MAX_BACKEND_WEIGHT:,}, got {weight!r}")
    if not 0 <= weight <= MAX_BACKEND_WEIGHT:
        raise RoutingError(f"{where} must be an integer 0..{MAX_BACKEND_WEIGHT:,}, got {weight!r}")
    return weight


# ---- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSplit:
    """One rule's exact shares of its requests by Service (``name``, or ``ns/name`` elsewhere)."""

    rule: str
    shares: tuple[tuple[str, Fraction], ...]

    def share(self, service: str) -> Fraction:
        return sum((s for k, s in self.shares if k == service), Fraction(0))


@dataclass(frozen=True)
class HTTPRouteSplit:
    """The split of every rule of an HTTPRoute that sends to the rollout's Services.

    The headline (``stable_weight``/``canary_weight``, percent) is the rule sending the canary
    the largest share, so one rule still sending to a rolled-back canary is never hidden.
    """

    stable_service: str
    canary_service: str
    rules: tuple[RuleSplit, ...]

    @property
    def canary_share(self) -> Fraction:
        return max((r.share(self.canary_service) for r in self.rules), default=Fraction(0))

    @property
    def stable_share(self) -> Fraction:
        if not self.rules:
            return Fraction(0)
        head = max(self.rules, key=lambda r: r.share(self.canary_service))
        return head.share(self.stable_service)

    @property
    def uniform(self) -> bool:
        """Whether every rule gives stable and canary the same shares."""
        pairs = {(r.share(self.stable_service), r.share(self.canary_service)) for r in self.rules}
        return len(pairs) <= 1

    def as_dict(self) -> dict[str, int | float]:
        return {
            self.stable_service: _percent(self.stable_share),
            self.canary_service: _percent(self.canary_share),
        }

    def routes_as_list(self) -> list[dict[str, Any]]:
        """Each rule's split, in the shape of the Istio router's ``TrafficSplit.routes_as_list``."""
        return [
            {"route": r.rule, "protocol": "http", "split": {k: _percent(v) for k, v in r.shares}}
            for r in self.rules
        ]

    def describe(self) -> str:
        if not self.rules:
            return "no rule sends to the rollout's Services"
        return "; ".join(
            f"{r.rule}: " + " ".join(f"{k} {_percent(s)}%" for k, s in r.shares) for r in self.rules
        )


def _percent(share: Fraction) -> int | float:
    value = share * 100
    if value.denominator == 1:
        return int(value)
    rounded = round(float(value), 4)
    return float(value) if rounded in (0.0, 100.0) else rounded


# ---- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    index: int
    position: int  # counts only the user's rules, so product rules never shift ``rules[i]``
    body: Mapping[str, Any]

    @property
    def label(self) -> str:
        name = self.body.get("name")
        return name if isinstance(name, str) and name else f"rules[{self.position}]"

    def refs(self) -> list[Any]:
        raw = self.body.get("backendRefs")
        return raw if isinstance(raw, list) else []


def _route_name(route: Mapping[str, Any]) -> str:
    meta = route.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else "<unnamed>"


def _namespace(route: Mapping[str, Any]) -> str:
    meta = route.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return ns if isinstance(ns, str) and ns else "default"


def _rules_of(route: Mapping[str, Any]) -> list[Any]:
    spec = route.get("spec")
    if not isinstance(spec, Mapping):
        raise RoutingError(f"HTTPRoute {_route_name(route)!r} has no spec object")
    rules = spec.get("rules")
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise RoutingError(
            f"HTTPRoute {_route_name(route)!r} spec.rules must be a list, got {type(rules).__name__}"
        )
    return rules


def _is_product_rule(rule: Any) -> bool:
    return (
        isinstance(rule, Mapping)
        and isinstance(rule.get("name"), str)
        and rule["name"].startswith(PRODUCT_ROUTE_PREFIX)
    )


def _all_rules(route: Mapping[str, Any]) -> list[_Rule]:
    found = []
    position = 0
    for index, body in enumerate(_rules_of(route)):
        if isinstance(body, Mapping) and not _is_product_rule(body):
            found.append(_Rule(index, position, body))
            position += 1
    return found


def _ref_service(ref: Any, route_ns: str) -> tuple[str, str] | None:
    """(namespace, name) of a backendRef to a core Service; None for other kinds."""
    if not isinstance(ref, Mapping):
        return None
    if ref.get("group", "") not in ("", None) or ref.get("kind", "Service") != "Service":
        return None
    name = ref.get("name")
    if not isinstance(name, str):
        return None
    return (str(ref.get("namespace") or route_ns), name)


def _describe_ref(ref: Any, route_ns: str) -> str:
    if not isinstance(ref, Mapping):
        return json.dumps(ref)
    kind = ref.get("kind", "Service")
    group = ref.get("group", "")
    ns = ref.get("namespace") or route_ns
    prefix = f"{group}/{kind} " if group or kind != "Service" else ""
    weight = ref.get("weight", 1)
    return f"{prefix}{ns}/{ref.get('name')} (weight {weight})"


def _is(ref: Any, route_ns: str, target: ServiceTarget, service: str) -> bool:
    found = _ref_service(ref, route_ns)
    return found is not None and found == (target.namespace or route_ns, service)


def _rollout_rules(route: Mapping[str, Any], target: ServiceTarget) -> list[_Rule]:
    ns = _namespace(route)
    return [
        rule
        for rule in _all_rules(route)
        if any(
            _is(ref, ns, target, s)
            for ref in rule.refs()
            for s in (target.stable_service, target.canary_service)
        )
    ]


def _weights(rule: _Rule, route: Mapping[str, Any]) -> list[int]:
    weights = []
    for i, ref in enumerate(rule.refs()):
        raw = ref.get("weight", 1) if isinstance(ref, Mapping) else None
        weights.append(
            validate_backend_weight(
                raw,
                f"HTTPRoute {_route_name(route)!r} rule {rule.label!r} backendRefs[{i}].weight",
            )
        )
    return weights


def _shares(weights: list[int]) -> list[Fraction]:
    total = sum(weights)
    return [Fraction(w, total) if total else Fraction(0) for w in weights]


# ---- reading ----------------------------------------------------------------------------------


def read_split(route: Mapping[str, Any], target: ServiceTarget) -> HTTPRouteSplit:
    """The exact split of every rule sending to the stable or canary Service.

    Raises RoutingError naming the rule and value when a weight is not an integer 0..1,000,000.
    """
    ns = _namespace(route)
    splits = []
    for rule in _rollout_rules(route, target):
        merged: dict[str, Fraction] = {}
        for ref, share in zip(rule.refs(), _shares(_weights(rule, route)), strict=True):
            service = _ref_service(ref, ns)
            if service is None:
                key = _describe_ref(ref, ns)
            elif service[0] == (target.namespace or ns):
                key = service[1]
            else:
                key = f"{service[0]}/{service[1]}"
            merged[key] = merged.get(key, Fraction(0)) + share
        splits.append(RuleSplit(rule.label, tuple(merged.items())))
    return HTTPRouteSplit(target.stable_service, target.canary_service, tuple(splits))


def managed_rules(
    route: Mapping[str, Any],
    target: ServiceTarget,
    reference_grants: Iterable[Mapping[str, Any]] | None = None,
) -> list[str]:
    """Labels of the rules a weight change rewrites; raises what ``check_target`` raises."""
    return [rule.label for rule in _checked_rules(route, target, reference_grants)]


def check_target(
    route: Mapping[str, Any],
    target: ServiceTarget,
    reference_grants: Iterable[Mapping[str, Any]] | None = None,
) -> HTTPRouteSplit:
    """Raise RoutingError unless the rollout can move every rule of its Services in one write.

    Refused, each naming the rule and the backendRefs it has: no rule sending to the Services; a
    managed rule that does not reference both Services, or also sends elsewhere; a weight outside
    0..1,000,000; ``rule_names`` naming a missing rule or leaving one out; and, when
    ``reference_grants`` (the ReferenceGrants of the Services' namespace) are given, a backendRef
    to another namespace that no grant allows. Returns the current split.
    """
    _checked_rules(route, target, reference_grants)
    return read_split(route, target)


def product_header_routes(route: Mapping[str, Any]) -> list[HeaderRoute]:
    """The product's header rules, as HeaderRoutes (``subset`` holds the Service name)."""
    found = []
    for rule in _rules_of(route):
        if not _is_product_rule(rule):
            continue
        refs = rule.get("backendRefs") or []
        matches = rule.get("matches") or []
        if len(refs) != 1 or not matches:
            continue
        headers = matches[0].get("headers") or [] if isinstance(matches[0], Mapping) else []
        mine = [h for h in headers if product_route_name(str(h.get("name", ""))) == rule["name"]]
        if len(mine) != 1:
            continue
        kind = MatchType.REGEX if mine[0].get("type") == "RegularExpression" else MatchType.EXACT
        try:
            found.append(HeaderRoute(mine[0]["name"], mine[0]["value"], kind, refs[0]["name"]))
        except (RoutingError, KeyError, TypeError):
            continue
    return found


# ---- writing ----------------------------------------------------------------------------------


def set_canary_weight(route: Mapping[str, Any], target: ServiceTarget, weight: object) -> Document:
    """``weight`` percent (0..100) of every managed rule to the canary Service, the rest to stable.

    Written as backendRef weights ``100 - weight`` and ``weight`` (weight 0 sends nothing).
    """
    canary = validate_weight(weight)
    out = copy.deepcopy(dict(route))
    ns = _namespace(out)
    for rule in _checked_rules(out, target):
        for ref in out["spec"]["rules"][rule.index]["backendRefs"]:
            ref["weight"] = canary if _is(ref, ns, target, target.canary_service) else 100 - canary
    return out


def promote(route: Mapping[str, Any], target: ServiceTarget) -> Document:
    """Everything of every managed rule to the canary; product header rules and mirrors removed.

    The stable backendRef stays with weight 0 (it sends nothing), so the rule still names both
    Services for the next rollout. RequestMirror filters to either Service go; others stay.
    """
    out = set_canary_weight(remove_product_routes(route), target, 100)
    out = _without_mirrors_to(out, target, target.stable_service)
    return _without_mirrors_to(out, target, target.canary_service)


def rollback(route: Mapping[str, Any], target: ServiceTarget) -> Document:
    """Every rule's canary weight moved onto the stable Service; product rules and mirrors removed.

    RequestMirror filters to the canary or the stable Service go; others stay.

    Lenient on purpose: needs only the route, touches rules outside ``rule_names`` and rules
    mixing other backends (their weights are kept, so their shares are too). A rule sending only
    to the canary sends the same share to stable instead. Raises RoutingError only when a
    weight of a rule sending to the canary cannot be read.
    """
    out = remove_product_routes(route)
    ns = _namespace(out)
    for rule in _all_rules(out):
        refs = out["spec"]["rules"][rule.index].get("backendRefs")
        if not isinstance(refs, list) or not any(
            _is(r, ns, target, target.canary_service) for r in refs
        ):
            continue
        weights = _weights(rule, out)
        canary = sum(
            w
            for r, w in zip(refs, weights, strict=True)
            if _is(r, ns, target, target.canary_service)
        )
        stable_at = next(
            (i for i, r in enumerate(refs) if _is(r, ns, target, target.stable_service)), None
        )
        if stable_at is None:
            # No stable backend yet: the first canary ref becomes it, port and all.
            stable_at = next(
                i for i, r in enumerate(refs) if _is(r, ns, target, target.canary_service)
            )
            refs[stable_at] = {**refs[stable_at], "name": target.stable_service}
            weights[stable_at] = 0
        for i, ref in enumerate(refs):
            if _is(ref, ns, target, target.canary_service):
                weights[i] = 0
        weights[stable_at] += canary
        if max(weights) > MAX_BACKEND_WEIGHT:
            # Keep the shares as closely as the CRD's range allows.
            scale = Fraction(MAX_BACKEND_WEIGHT, max(weights))
            weights = [int(w * scale) for w in weights]
        for ref, weight in zip(refs, weights, strict=True):
            if isinstance(ref, dict):
                ref["weight"] = weight
    out = _without_mirrors_to(out, target, target.stable_service)
    return _without_mirrors_to(out, target, target.canary_service)


def set_header_route(
    route: Mapping[str, Any], target: ServiceTarget, header_route: HeaderRoute
) -> Document:
    """Add or replace the product rule sending requests whose header matches to one Service.

    ``header_route.subset`` names the Service (the stable or canary one). Gateway API ranks
    matches by specificity, not position, so the rule copies every match of the managed rules
    and adds its header: one more header match than the rule it shadows, so it takes
    precedence. It is placed before the first managed rule. Only ``exact`` and ``regex`` matches
    exist in Gateway API (``Exact``, ``RegularExpression``).
    """
    if header_route.subset not in (target.stable_service, target.canary_service):
        raise RoutingError(
            f"header route Service {header_route.subset!r} is neither the stable Service "
            f"{target.stable_service!r} nor the canary Service {target.canary_service!r}; build "
            f"the HeaderRoute with subset={target.canary_service!r}"
        )
    if header_route.match_type is MatchType.PREFIX:
        raise RoutingError(
            f"Gateway API header matches are Exact or RegularExpression; a prefix match for "
            f"{header_route.header!r} = {header_route.value!r} cannot be written: use "
            f"match_type='regex' with value '{re.escape(header_route.value)}.*'"
        )
    out = remove_header_route(route, target, header_route.header)
    ns = _namespace(out)
    managed = _checked_rules(out, target)
    matches: list[dict[str, Any]] = []
    kind = "RegularExpression" if header_route.match_type is MatchType.REGEX else "Exact"
    for rule in managed:
        for match in rule.body.get("matches") or [_DEFAULT_MATCH]:
            copied = copy.deepcopy(dict(match))
            headers = [
                h
                for h in copied.get("headers") or []
                if str(h.get("name", "")).lower() != header_route.header
            ]
            if len(headers) != len(copied.get("headers") or []):
                raise RoutingError(
                    f"rule {rule.label!r} of HTTPRoute {_route_name(route)!r} already matches "
                    f"header {header_route.header!r}; a product header rule on it could not take "
                    f"precedence: pick another header"
                )
            if len(headers) >= MAX_HEADER_MATCHES:
                raise RoutingError(
                    f"rule {rule.label!r} of HTTPRoute {_route_name(route)!r} has "
                    f"{len(headers)} header matches, the most a match may have; no header can be added"
                )
            copied["headers"] = [
                *headers,
                {"type": kind, "name": header_route.header, "value": header_route.value},
            ]
            matches.append(copied)
    template = next(ref for ref in managed[0].refs() if _is(ref, ns, target, header_route.subset))
    ref = {k: copy.deepcopy(v) for k, v in template.items() if k != "filters"}
    ref["weight"] = 1
    new_rule = {
        "name": product_route_name(header_route.header),
        "matches": matches,
        "backendRefs": [ref],
    }
    rules: list[Any] = out["spec"]["rules"]
    if len(rules) >= MAX_RULES:
        raise RoutingError(
            f"HTTPRoute {_route_name(route)!r} already has {len(rules)} rules, the most the "
            f"Gateway API allows; a header rule cannot be added (merge rules or leave the "
            f"header route out)"
        )
    total = sum(len(r.get("matches") or [{}]) for r in rules if isinstance(r, Mapping))
    if total + len(matches) > MAX_MATCHES:
        raise RoutingError(
            f"HTTPRoute {_route_name(route)!r} would have {total + len(matches)} matches with "
            f"the header rule, more than the {MAX_MATCHES} the Gateway API allows"
        )
    rules.insert(managed[0].index, new_rule)
    return out


def remove_header_route(route: Mapping[str, Any], target: ServiceTarget, header: str) -> Document:
    """Remove the product rule for ``header``; a route without it is returned unchanged."""
    name = product_route_name(header)
    return _without_rules(route, lambda r: isinstance(r, Mapping) and r.get("name") == name)


def remove_product_routes(route: Mapping[str, Any]) -> Document:
    """Remove every rule the product added (named ``airflow-canary-header-*``)."""
    return _without_rules(route, _is_product_rule)


def set_mirror(route: Mapping[str, Any], target: ServiceTarget, percent: object = 100) -> Document:
    """Mirror ``percent`` (a number 0..100, e.g. 100 or 12.5) of every managed rule to the canary.

    A ``RequestMirror`` filter on each managed rule whose ``backendRef`` is the rule's canary
    backendRef (its port and namespace kept); an integer percentage is written as ``percent``,
    any other as the exact ``fraction`` (12.5 -> 1/8). An existing mirror to the canary is
    replaced, 0 removes it, other filters are kept. RoutingError names a bad ``percent``.
    """
    value = validate_mirror_percent(percent)
    out = _without_mirrors_to(copy.deepcopy(dict(route)), target, target.canary_service)
    if value == 0:
        return out
    ns = _namespace(out)
    share: dict[str, Any]
    if value.is_integer():
        share = {"percent": int(value)}
    else:
        exact = Fraction(value).limit_denominator(_MAX_FRACTION_DENOMINATOR) / 100
        share = {"fraction": {"numerator": exact.numerator, "denominator": exact.denominator}}
    for rule in _checked_rules(out, target):
        body = out["spec"]["rules"][rule.index]
        canary = next(r for r in rule.refs() if _is(r, ns, target, target.canary_service))
        backend = {
            k: copy.deepcopy(v)
            for k, v in canary.items()
            if k in ("group", "kind", "name", "namespace", "port")
        }
        body.setdefault("filters", []).append(
            {"type": "RequestMirror", "requestMirror": {"backendRef": backend, **share}}
        )
    return out


def remove_mirror(route: Mapping[str, Any], target: ServiceTarget) -> Document:
    """Remove every RequestMirror filter that mirrors to the canary Service."""
    return _without_mirrors_to(copy.deepcopy(dict(route)), target, target.canary_service)


def mirror_percent(route: Mapping[str, Any], target: ServiceTarget) -> float:
    """The largest percentage any managed rule mirrors to the canary Service (0.0 when none).

    ``percent`` as given, ``fraction`` as ``100 * numerator / denominator`` (denominator
    default 100), neither as 100 (the Gateway API defaults).
    """
    ns = _namespace(route)
    found = 0.0
    for rule in _checked_rules(route, target):
        for f in rule.body.get("filters") or []:
            if not isinstance(f, Mapping) or f.get("type") != "RequestMirror":
                continue
            mirror = f.get("requestMirror")
            if not isinstance(mirror, Mapping):
                continue
            if not _is(mirror.get("backendRef"), ns, target, target.canary_service):
                continue
            fraction = mirror.get("fraction")
            if isinstance(fraction, Mapping):
                share = 100 * fraction.get("numerator", 0) / fraction.get("denominator", 100)
            else:
                share = mirror.get("percent", 100)
            found = max(found, float(share))
    return found


# ---- checks -----------------------------------------------------------------------------------


def _checked_rules(
    route: Mapping[str, Any],
    target: ServiceTarget,
    reference_grants: Iterable[Mapping[str, Any]] | None = None,
) -> list[_Rule]:
    ns = _namespace(route)
    rollout = _rollout_rules(route, target)
    if not rollout:
        services = [_ref_service(ref, ns) for rule in _all_rules(route) for ref in rule.refs()]
        elsewhere = sorted(
            {
                found[0]
                for found in services
                if found is not None
                and found[1] in (target.stable_service, target.canary_service)
                and found[0] != (target.namespace or ns)
            }
        )
        hint = (
            f" (the rules send to those Services in namespace {elsewhere[0]!r}: pass "
            f"backend_namespace={elsewhere[0]!r})"
            if elsewhere
            else ""
        )
        raise RoutingError(
            f"HTTPRoute {_route_name(route)!r} has no rule with a backendRef to Service "
            f"{target.stable_service!r} or {target.canary_service!r} in namespace "
            f"{target.namespace or ns!r}; its rules: {_describe_rules(route)}{hint}. Reference "
            f"both Services in the rule to roll out"
        )
    if target.rule_names is None:
        managed = rollout
    else:
        every = {rule.label: rule for rule in _all_rules(route)}
        managed = []
        for name in target.rule_names:
            if name not in every:
                raise RoutingError(
                    f"HTTPRoute {_route_name(route)!r} has no rule {name!r} (rule_names); its "
                    f"rules are {', '.join(map(repr, every)) or 'none'} (unnamed rules are "
                    f"'rules[0]', 'rules[1]', ...)"
                )
            if every[name] not in rollout:
                raise RoutingError(
                    f"rule {name!r} of HTTPRoute {_route_name(route)!r} references neither "
                    f"Service {target.stable_service!r} nor {target.canary_service!r}"
                )
            managed.append(every[name])
        left_out = [rule.label for rule in rollout if rule not in managed]
        if left_out:
            raise RoutingError(
                f"HTTPRoute {_route_name(route)!r}: rule(s) {', '.join(map(repr, left_out))} "
                f"also send to {target.stable_service!r}/{target.canary_service!r} but are not "
                f"in rule_names {list(target.rule_names)}; add them so the route moves together"
            )
    for rule in managed:
        refs = rule.refs()
        described = ", ".join(_describe_ref(r, ns) for r in refs)
        missing = [
            s
            for s in (target.stable_service, target.canary_service)
            if not any(_is(r, ns, target, s) for r in refs)
        ]
        if missing:
            raise RoutingError(
                f"rule {rule.label!r} of HTTPRoute {_route_name(route)!r} must reference both "
                f"Services {target.stable_service!r} and {target.canary_service!r}; it has "
                f"backendRefs [{described}]. Add a backendRef to {missing[0]!r} with weight 0"
            )
        others = [
            r
            for r in refs
            if not any(
                _is(r, ns, target, s) for s in (target.stable_service, target.canary_service)
            )
        ]
        if others:
            raise RoutingError(
                f"rule {rule.label!r} of HTTPRoute {_route_name(route)!r} also sends to "
                f"{', '.join(_describe_ref(r, ns) for r in others)}; the product splits a rule "
                f"only between {target.stable_service!r} and {target.canary_service!r}: move "
                f"that backend to a rule of its own"
            )
        _weights(rule, route)
        if reference_grants is not None:
            grants = list(reference_grants)
            for ref in refs:
                service = _ref_service(ref, ns)
                assert service is not None
                if service[0] != ns and not _granted(grants, ns, service):
                    raise RoutingError(
                        f"rule {rule.label!r} of HTTPRoute {_route_name(route)!r} references "
                        f"Service {service[0]}/{service[1]} in another namespace, and no "
                        f"ReferenceGrant in {service[0]!r} allows HTTPRoutes from {ns!r} to "
                        f"reference it; create one (from: HTTPRoute in {ns}, to: Service)"
                    )
    return managed


def _granted(grants: Sequence[Mapping[str, Any]], from_ns: str, service: tuple[str, str]) -> bool:
    for grant in grants:
        meta = grant.get("metadata") or {}
        spec = grant.get("spec") or {}
        if (meta.get("namespace") or "default") != service[0]:
            continue
        froms = any(
            f.get("group") == GROUP
            and f.get("kind") == "HTTPRoute"
            and f.get("namespace") == from_ns
            for f in spec.get("from") or []
        )
        tos = any(
            t.get("group", "") == ""
            and t.get("kind") == "Service"
            and t.get("name") in (None, "", service[1])
            for t in spec.get("to") or []
        )
        if froms and tos:
            return True
    return False


# ---- documents --------------------------------------------------------------------------------


def _without_mirrors_to(route: Document, target: ServiceTarget, service: str) -> Document:
    ns = _namespace(route)
    for rule in _rules_of(route):
        if not isinstance(rule, dict) or not isinstance(rule.get("filters"), list):
            continue
        kept = [
            f
            for f in rule["filters"]
            if not (
                isinstance(f, Mapping)
                and f.get("type") == "RequestMirror"
                and _is((f.get("requestMirror") or {}).get("backendRef"), ns, target, service)
            )
        ]
        if len(kept) != len(rule["filters"]):
            if kept:
                rule["filters"] = kept
            else:
                del rule["filters"]
    return route


def _without_rules(route: Mapping[str, Any], drop: Any) -> Document:
    out = copy.deepcopy(dict(route))
    rules = _rules_of(out)
    kept = [r for r in rules if not drop(r)]
    if len(kept) != len(rules):
        out["spec"]["rules"] = kept
    return out


def _describe_rules(route: Mapping[str, Any]) -> str:
    ns = _namespace(route)
    return (
        "; ".join(
            f"{rule.label} -> [{', '.join(_describe_ref(r, ns) for r in rule.refs())}]"
            for rule in _all_rules(route)
        )
        or "none"
    )
