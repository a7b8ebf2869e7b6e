"""Validated values of traffic routing: targets, splits, header routes and their errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

PRODUCT_ROUTE_PREFIX = "airflow-canary-header-"

# RFC 9110 token characters; Istio additionally wants header match keys lower-case.
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+\-.^_`|~]+$")

# Python's `re` accepts these but Envoy's RE2 rejects them; catching them here makes a bad
# regex fail when the DAG is parsed instead of when Istio pushes the route.
_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?=|\(\?!"), "lookahead"),
    (re.compile(r"\(\?<=|\(\?<!"), "lookbehind"),
    (re.compile(r"(?<!\\)\\[1-9]"), "backreference"),
    (re.compile(r"\(\?P=|\(\?\("), "backreference"),
    (re.compile(r"\(\?>"), "atomic group"),
    (re.compile(r"(?<!\\)[*+?}]\+"), "possessive quantifier"),
)


class RoutingError(ValueError):
    """A routing request or document the product cannot act on; the message says what to fix."""


class MatchType(str, Enum):
    """How a header route compares the request header with its value (Istio StringMatch)."""

    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"


def _require_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RoutingError(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class RouteTarget:
    """Which subsets a rollout moves traffic between, and optionally which routes carry it.

    By default a rollout manages every http, tcp and tls route of the VirtualService that
    sends to its stable or canary subset. ``route_name`` (one name or a list) names the routes
    to manage instead: http routes by ``name``, any route by position as ``http[0]``,
    ``tcp[0]`` or ``tls[0]`` (Istio's tcp and tls routes have no names; positions do not count
    the product's own header routes). A route that sends to
    the subsets but is not listed makes every traffic move refuse. ``host`` picks the service
    when the subsets of several hosts are routed; by default the one host the stable/canary
    destinations name.
    """

    stable_subset: str = "v1"
    canary_subset: str = "v2"
    route_name: str | Sequence[str] | None = None
    host: str | None = None

    def __post_init__(self) -> None:
        _require_name("stable_subset", self.stable_subset)
        _require_name("canary_subset", self.canary_subset)
        if self.stable_subset == self.canary_subset:
            raise RoutingError(
                f"stable_subset and canary_subset must differ, both are {self.stable_subset!r}"
            )
        object.__setattr__(self, "route_name", _route_names(self.route_name))
        if self.host is not None:
            _require_name("host", self.host)

    @property
    def route_names(self) -> tuple[str, ...] | None:
        """The routes to manage, or None for every route of the rollout's subsets."""
        names = self.route_name
        return names if isinstance(names, tuple) else None


def _route_names(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    names: list[object]
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, Sequence):
        names = list(value)
        if not names:
            raise RoutingError(
                "route_name must name at least one route, or be None to manage every route "
                "of the rollout's subsets; got []"
            )
    else:
        raise RoutingError(
            f"route_name must be a route name, a list of route names or None, got {value!r}"
        )
    for name in names:
        _require_name("route_name", name)
        assert isinstance(name, str)
        if name.startswith(PRODUCT_ROUTE_PREFIX):
            # Product routes are removed on promote/rollback; a managed route must survive.
            raise RoutingError(
                f"route_name must name your routes, not a product header route "
                f"({PRODUCT_ROUTE_PREFIX}*), got {name!r}"
            )
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise RoutingError(f"route_name lists {duplicates} more than once: {names!r}")
    return tuple(str(n) for n in names)


@dataclass(frozen=True)
class HeaderRoute:
    """A product-owned route sending requests whose header matches straight to one subset."""

    header: str
    value: str
    match_type: MatchType = MatchType.EXACT
    subset: str = "v2"

    def __post_init__(self) -> None:
        # HTTP header names are case-insensitive; Istio wants match keys lower-case.
        object.__setattr__(self, "header", validate_header_name(self.header))
        object.__setattr__(self, "match_type", _match_type(self.match_type))
        _require_name("subset", self.subset)
        if not isinstance(self.value, str) or self.value == "":
            raise RoutingError(
                f"header route value for {self.header!r} must be a non-empty string, "
                f"got {self.value!r}"
            )
        if self.match_type is MatchType.REGEX:
            _check_regex(self.value)

    @property
    def route_name(self) -> str:
        return product_route_name(self.header)

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.route_name,
            "header": self.header,
            "value": self.value,
            "match_type": self.match_type.value,
            "subset": self.subset,
        }


def product_route_name(header: str) -> str:
    """The route name under which the product owns the header route for ``header``."""
    return PRODUCT_ROUTE_PREFIX + validate_header_name(header)


def validate_header_name(header: object) -> str:
    """Return ``header`` lower-cased, or raise if it is not an HTTP header name."""
    if not isinstance(header, str):
        raise RoutingError(f"header must be an HTTP header name string, got {header!r}")
    name = header.strip().lower()
    if not _HEADER_NAME.match(name):
        raise RoutingError(
            f"header must be an HTTP header name such as 'x-canary-version' "
            f"(letters, digits and !#$%&'*+-.^_`|~), got {header!r}"
        )
    return name


def _match_type(match_type: object) -> MatchType:
    if isinstance(match_type, MatchType):
        return match_type
    try:
        return MatchType(str(match_type).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in MatchType)
        raise RoutingError(f"match_type must be one of {allowed}, got {match_type!r}") from None


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RoutingError(f"header regex {pattern!r} does not compile: {exc}") from None
    for construct, what in _RE2_UNSUPPORTED:
        if construct.search(pattern):
            raise RoutingError(
                f"header regex {pattern!r} uses a {what}, which Istio's RE2 engine does not support"
            )


def validate_weight(weight: object) -> int:
    """Return ``weight`` as an int in 0..100; accepts ints, integral floats and "10"."""
    value: int | None = None
    if isinstance(weight, bool):
        value = None
    elif isinstance(weight, int):
        value = weight
    elif isinstance(weight, float) and weight.is_integer():
        value = int(weight)
    elif isinstance(weight, str) and re.fullmatch(r"\s*[+-]?\d+\s*", weight):
        value = int(weight)
    if value is None or not 0 <= value <= 100:
        raise RoutingError(f"weight must be an integer 0..100, got {weight!r}")
    return value


def validate_header_route(
    header: object, value: object, match_type: object = MatchType.EXACT, subset: str = "v2"
) -> HeaderRoute:
    """Build a HeaderRoute from user input, raising RoutingError naming any bad part."""
    name = validate_header_name(header)
    if not isinstance(value, str):
        raise RoutingError(
            f"header route value for {name!r} must be a non-empty string, got {value!r}"
        )
    return HeaderRoute(
        header=name,
        value=value,
        match_type=_match_type(match_type),
        subset=subset,
    )
