"""Service host names as Istio resolves them: short names, FQDNs and the namespace they imply."""

from __future__ import annotations

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """``host`` as Istio resolves it from an object in ``namespace``.

    A short name (``reviews``) is qualified with the namespace of the object that names it
    (Istio's ``ResolveShortnameToFQDN``); ``name.ns`` and ``name.ns.svc`` are completed to
    ``svc.cluster.local``; anything else (FQDNs, external names, wildcards) is kept.
    """
    name = host.rstrip(".")
    if name.startswith("*"):
        return name
    parts = name.split(".")
    if len(parts) == 1:
        return f"{name}.{namespace}.{CLUSTER_DOMAIN}"
    if len(parts) == 2:
        return f"{name}.{CLUSTER_DOMAIN}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{name}.cluster.local"
    return name


def service_namespace(host_fqdn: str) -> str | None:
    """The Kubernetes namespace of a ``name.ns.svc.cluster.local`` host, else None."""
    parts = host_fqdn.split(".")
    if len(parts) == 5 and ".".join(parts[2:]) == CLUSTER_DOMAIN:
        return parts[1]
    return None


def host_matches(pattern_fqdn: str, host_fqdn: str) -> bool:
    """Whether a DestinationRule host (possibly ``*.suffix`` or ``*``) covers ``host_fqdn``."""
    if pattern_fqdn == "*":
        return True
    if pattern_fqdn.startswith("*."):
        return host_fqdn.endswith(pattern_fqdn[1:])
    return pattern_fqdn == host_fqdn
