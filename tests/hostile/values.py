"""Generated hostile values and the reference rules that say which of them are valid.

The rules are written here independently of the product, from the systems that read the values:
Kubernetes' ``k8s.io/apimachinery/pkg/util/validation`` (matched against the whole string, as
Go's regexp does: no trailing newline slips through), RFC 9110 field values, Prometheus label
names, the product's documented ranges.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

#: Values an attacker or a typo would try: PromQL label-injection, quotes and backslashes,
#: newlines (a trailing one passes Python's ``$``), CRLF header splitting, NUL, Unicode
#: look-alikes, path traversal, lengths just over the limits.
INJECTIONS: tuple[str, ...] = (
    '"} or vector(1) #',
    '"}) or vector(1) #',
    'v2"} or on() vector(1) #',
    'v2",namespace=~".*',
    "v2'",
    "a\\",
    'a\\"',
    "v2\n",
    "default\n",
    "\nv2",
    "x\r\nX-Injected: 1",
    "v2\r",
    "\x00",
    "v2\x00",
    "\x7f",
    "ｖ２",
    "défault",
    "😀",
    "\u202ev2",
    " v2",
    "v2 ",
    "",
    " ",
    "\t",
    "A" * 300,
    "a" * 64,
    "a" * 254,
    "default/../kube-system",
    "../x",
    "a/b",
    "a..b",
    "-a",
    "a-",
    ".a",
    "V2",
    "v2,v3",
    "v1|v2",
    ".*",
    "$(HOME)",
    "%0d%0a",
    "javascript:alert(1)",
    "<script>alert(1)</script>",
)

NUMBERS = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([10**18, -(10**18), 2**31, 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
)

TEXT = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=40),
    st.text(alphabet="abcxyz019-._/ \n\r\"'\\{}=~", max_size=30),
)

#: Anything a DAG author could pass by mistake. Jinja markup is left out: a template is only
#: checked once rendered (tests/hostile/test_rendered_values.py feeds rendered values).
ANYTHING = st.one_of(
    TEXT,
    NUMBERS,
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.tuples(st.text(max_size=5)),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from([timedelta(seconds=-1), timedelta(0), timedelta(days=400), object()]),
).filter(lambda v: not (isinstance(v, str) and ("{{" in v or "{%" in v)))

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PROMETHEUS_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def dns1123_label(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 63 and bool(_DNS1123_LABEL.fullmatch(v))


def dns1123_subdomain(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(v))


def dns1035_label(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 63 and bool(_DNS1035_LABEL.fullmatch(v))


def label_value(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 63 and bool(_LABEL_VALUE.fullmatch(v))


def prometheus_label_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_PROMETHEUS_LABEL_NAME.fullmatch(v))


def header_name(v: Any) -> bool:
    return isinstance(v, str) and bool(_TOKEN.fullmatch(v))


def field_value(v: Any) -> bool:
    """RFC 9110 section 5.5: no control characters but horizontal tab."""
    return isinstance(v, str) and not any(
        (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in v
    )


def weight(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return 0 <= v <= 100
    if isinstance(v, float):
        return v.is_integer() and 0 <= v <= 100
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return 0 <= int(v) <= 100
    return False


def duration(v: Any) -> bool:
    """A timedelta or number of seconds (or numeric text), positive, at most a year."""
    if isinstance(v, timedelta):
        seconds = v.total_seconds()
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            seconds = float(v)
        except OverflowError:
            return False
    elif isinstance(v, str):
        try:
            seconds = float(v)
        except ValueError:
            return False
    else:
        return False
    return 0 < seconds <= 365 * 24 * 3600


def flag(v: Any) -> bool:
    return isinstance(v, bool)


def fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def finite_at_least(low: float, *, strict: bool = False) -> Any:
    def rule(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            if not math.isfinite(v):
                return False
        except OverflowError:
            return False
        return v > low if strict else v >= low

    return rule


def check_name(v: Any) -> bool:
    return (
        isinstance(v, str)
        and 0 < len(v) <= 63
        and v == v.strip()
        and "/" not in v
        and all(c.isprintable() for c in v)
    )
