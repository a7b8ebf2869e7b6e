"""Names the product hands to Kubernetes and Prometheus: the one place that checks them.

Each function returns the value when the real system would accept it and raises ``error`` (a
``ValueError`` subclass of the caller's layer: ``RoutingError``, ``AnalysisError``...) naming
the parameter, the value and what is expected otherwise. The rules are Kubernetes'
(``k8s.io/apimachinery/pkg/util/validation``: ``IsDNS1123Label``, ``IsDNS1123Subdomain``,
``IsDNS1035Label``, ``IsValidLabelValue``) and Prometheus' label name syntax
(``[a-zA-Z_][a-zA-Z0-9_]*``).

Every pattern is matched against the whole string (``fullmatch``): ``re.match`` with a ``$``
anchor accepts a trailing newline, which Go's regexp (kube-apiserver, Prometheus) refuses.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_PROMETHEUS_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


_DNS1123_LABEL_RULE = (
    f"at most {DNS1123_LABEL_MAX} characters of lower-case letters, digits and '-', starting "
    "and ending with a letter or digit"
)


def _refuse(what: str, expected: str, value: object, error: type[ValueError]) -> ValueError:
    return error(f"{what} must be {expected}, got {value!r}")


def dns1123_label(
    what: str,
    value: object,
    error: type[ValueError] = ValueError,
    kind: str = "a name",
) -> str:
    """``value`` if it is an RFC 1123 label (DestinationRule subsets, namespaces), else raise.

    At most 63 characters of lower-case letters, digits and ``-``, alphanumeric at both ends;
    ``kind`` says what the name is in the message (``"a DestinationRule subset name"``).
    """
    if isinstance(value, str) and len(value) <= DNS1123_LABEL_MAX:
        if _DNS1123_LABEL.fullmatch(value):
            return value
    raise _refuse(what, f"{kind}: a DNS-1123 label ({_DNS1123_LABEL_RULE})", value, error)


def namespace_name(what: str, value: object, error: type[ValueError] = ValueError) -> str:
    """``value`` if it is a Kubernetes namespace name (a DNS-1123 label), else raise."""
    if isinstance(value, str) and len(value) <= DNS1123_LABEL_MAX:
        if _DNS1123_LABEL.fullmatch(value):
            return value
    expected = (
        f"a Kubernetes namespace name (1-{DNS1123_LABEL_MAX} characters of a-z 0-9 -, "
        "alphanumeric at both ends)"
    )
    raise _refuse(what, expected, value, error)


def object_name(
    what: str,
    value: object,
    error: type[ValueError] = ValueError,
    kind: str = "a Kubernetes object name",
) -> str:
    """``value`` if it is a DNS-1123 subdomain, the name of a Deployment, VirtualService,
    HTTPRoute or any custom resource; else raise.

    At most 253 characters of lower-case letters, digits, ``-`` and ``.``, each dot-separated
    part alphanumeric at both ends.
    """
    if isinstance(value, str) and len(value) <= DNS1123_SUBDOMAIN_MAX:
        if _DNS1123_SUBDOMAIN.fullmatch(value):
            return value
    rule = (
        f"at most {DNS1123_SUBDOMAIN_MAX} characters of lower-case letters, digits, '-' and "
        "'.', starting and ending with a letter or digit"
    )
    raise _refuse(what, f"{kind}: a DNS-1123 subdomain ({rule})", value, error)


def service_name(what: str, value: object, error: type[ValueError] = ValueError) -> str:
    """``value`` if it is a Service name: a DNS-1035 label (starts with a letter), else raise."""
    if isinstance(value, str) and len(value) <= DNS1123_LABEL_MAX:
        if _DNS1035_LABEL.fullmatch(value):
            return value
    rule = (
        f"at most {DNS1123_LABEL_MAX} characters of lower-case letters, digits and '-', "
        "starting with a letter and ending with a letter or digit"
    )
    raise _refuse(what, f"a Service name: a DNS-1035 label ({rule})", value, error)


def label_value(what: str, value: object, error: type[ValueError] = ValueError) -> str:
    """``value`` if Kubernetes accepts it as a non-empty label value, else raise.

    1-63 characters of ``A-Z a-z 0-9 . _ -``, alphanumeric at both ends.
    """
    if isinstance(value, str) and 0 < len(value) <= LABEL_VALUE_MAX:
        if _LABEL_VALUE.fullmatch(value):
            return value
    expected = (
        f"a Kubernetes label value (1-{LABEL_VALUE_MAX} characters of A-Z a-z 0-9 . _ -, "
        "alphanumeric at both ends)"
    )
    raise _refuse(what, expected, value, error)


def prometheus_label_name(what: str, value: object, error: type[ValueError] = ValueError) -> str:
    """``value`` if it is a Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``), else raise."""
    if isinstance(value, str) and _PROMETHEUS_LABEL_NAME.fullmatch(value):
        return value
    raise _refuse(what, "a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)", value, error)


__all__ = [
    "dns1123_label",
    "label_value",
    "namespace_name",
    "object_name",
    "prometheus_label_name",
    "service_name",
]
