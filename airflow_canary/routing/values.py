"""Validated values of traffic routing: targets, splits, header routes and their errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from airflow_canary import names
from airflow_canary.parameters import is_finite_number

PRODUCT_ROUTE_PREFIX = "airflow-canary-header-"

# What Istio's VirtualService validation accepts (pilot/pkg/config/validation, as of Istio 1.2x):
# a header match key is an RFC 7230 token (any case), an HTTP/2 pseudo-header, or a JWT claim
# (``ValidateHTTPHeaderNameOrJwtClaimRoute``); a subset name is a DNS-1123 label
# (``validateSubsetName``); a regex is non-empty, at most 1024 characters and compiles as RE2
# (``validateStringMatchRegexp``); a prefix match is non-empty (``validateStringMatch``).
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM = re.compile(r"@request\.auth\.claims(?:(?:\.[^.\[\]]+)+|(?:\[[^\[\]]+\])+)")
MAX_REGEX_LENGTH = 1024


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
        validate_subset_name("stable_subset", self.stable_subset)
        validate_subset_name("canary_subset", self.canary_subset)
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
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
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
        validate_subset_name("subset", self.subset)
        if not isinstance(self.value, str):
            raise RoutingError(
                f"header route value for {self.header!r} must be a string, got {self.value!r}"
            )
        _check_value(self.match_type, self.value, self.header)

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
    """Return ``header`` as a header match key, or raise if Istio would refuse it.

    Plain HTTP header names are lower-cased (HTTP header names are case-insensitive and Envoy
    matches them lower-cased); pseudo-headers (``:authority``) and JWT claims
    (``@request.auth.claims.group``) are kept as written.
    """
    if not isinstance(header, str):
        raise RoutingError(f"header must be an HTTP header name string, got {header!r}")
    if header in _PSEUDO_HEADERS or _JWT_CLAIM.fullmatch(header):
        return header
    if not _TOKEN.fullmatch(header):
        raise RoutingError(
            f"header must be an HTTP header name such as 'x-canary-version' (letters, digits "
            f"and !#$%&'*+-.^_`|~), a pseudo-header ({', '.join(sorted(_PSEUDO_HEADERS))}) or "
            f"a JWT claim ('@request.auth.claims.<name>'), got {header!r}"
        )
    return header.lower()


def validate_subset_name(what: str, subset: object) -> str:
    """Return ``subset`` if it is a DNS-1123 label, as Istio requires of subset names."""
    _require_name(what, subset)
    return names.dns1123_label(what, subset, RoutingError, kind="a DestinationRule subset name")


def _match_type(match_type: object) -> MatchType:
    if isinstance(match_type, MatchType):
        return match_type
    try:
        return MatchType(str(match_type).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in MatchType)
        raise RoutingError(f"match_type must be one of {allowed}, got {match_type!r}") from None


def _check_value(match_type: MatchType, value: str, header: str) -> None:
    # RFC 9110 section 5.5: a field value holds visible characters, spaces and tabs; CR, LF and
    # NUL are "invalid and dangerous". No request can carry them, so such a route never matches.
    bad = sorted({c for c in value if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F})
    if bad:
        raise RoutingError(
            f"header route value for {header!r} must be an HTTP field value (no control "
            f"characters such as CR, LF or NUL; RFC 9110 section 5.5), got {value!r} with "
            f"{', '.join(repr(c) for c in bad)}"
        )
    if match_type is MatchType.PREFIX and value == "":
        raise RoutingError(f"header route prefix for {header!r} must not be empty")
    if match_type is MatchType.REGEX:
        _check_regex(value, header)


def _check_regex(pattern: str, header: str) -> None:
    """Compile ``pattern`` with RE2 (Envoy's engine), as Istio's validation does."""
    import re2  # google-re2: the RE2 library itself, not an emulation

    if pattern == "":
        raise RoutingError(f"header route regex for {header!r} must not be empty")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise RoutingError(
            f"header route regex for {header!r} is {len(pattern)} characters long; Istio allows "
            f"at most {MAX_REGEX_LENGTH}"
        )
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RoutingError(
            f"header regex {pattern!r} is not valid RE2, the syntax Istio and Envoy use "
            f"(https://github.com/google/re2/wiki/Syntax): {reason}"
        ) from None


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


def validate_mirror_percent(percent: object) -> float:
    """Return ``percent`` as a float in 0..100: the share of requests a mirror copies.

    Istio's ``mirrorPercentage.value`` is a double (``12.5`` mirrors one request in eight);
    Gateway API's ``RequestMirror`` takes an integer ``percent`` or a ``fraction``. Ints and
    finite floats are accepted; a bool, a string, NaN, an infinity or a value outside 0..100
    raises RoutingError naming the value.
    """
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise RoutingError(
            f"mirror percent must be a number 0..100 (e.g. 100 or 12.5), got {percent!r} "
            f"({type(percent).__name__})"
        )
    if not is_finite_number(percent) or not 0 <= percent <= 100:
        raise RoutingError(f"mirror percent must be a number 0..100, got {percent!r}")
    return float(percent)


def validate_header_route(
    header: object, value: object, match_type: object = MatchType.EXACT, subset: str = "v2"
) -> HeaderRoute:
    """Build a HeaderRoute from user input, raising RoutingError naming any bad part."""
    name = validate_header_name(header)
    if not isinstance(value, str):
        raise RoutingError(f"header route value for {name!r} must be a string, got {value!r}")
    return HeaderRoute(
        header=name,
        value=value,
        match_type=_match_type(match_type),
        subset=subset,
    )
