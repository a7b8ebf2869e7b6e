"""Admission in the local API server: decoding checks, metadata validation, defaulting and schema validation of writes."""

from __future__ import annotations

import copy
import json
import re
import secrets
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver import quantity
from airflow_canary.local.apiserver.base import CRD, ApiBase
from airflow_canary.local.apiserver.request import ResourcePath, bad_request, invalid
from airflow_canary.local.apiserver.resources import ResourceType
from airflow_canary.local.apiserver.schema import CauseReason, Violation, prune

Obj = dict[str, Any]

# k8s.io/apimachinery/pkg/util/validation, matched against the whole string as Go's regexp does
# (Python's ``$`` would let a trailing newline through).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class Admission(ApiBase):
    """Checks and defaults an object about to be written, as the apiserver's decode, default and validate steps."""

    def _admit(
        self, request: web.Request, path: ResourcePath, obj: Any, *, name: str | None
    ) -> tuple[Obj, list[str]]:
        """Check and default an object about to be written; returns it and the warnings to send."""
        rtype = path.rtype
        if not isinstance(obj, dict):
            raise bad_request(f"the body must be a {rtype.kind} object, got {type(obj).__name__}")
        obj = copy.deepcopy(obj)
        if obj.get("apiVersion", path.api_version) != path.api_version:
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version ({path.api_version})"
            )
        if obj.get("kind", rtype.kind) != rtype.kind:
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({rtype.kind})"
            )
        obj["apiVersion"], obj["kind"] = path.api_version, rtype.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(f"metadata must be an object, got {json.dumps(meta)}")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", path.namespace):
                raise bad_request(
                    f"the namespace of the provided object ({meta['namespace']}) does not match the namespace sent on the request ({path.namespace})"
                )
            meta["namespace"] = path.namespace
        else:
            meta.pop("namespace", None)
        if name is not None:
            if meta.get("name") not in (None, "", name):
                raise bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            meta["name"] = name
        elif not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        problems = _metadata_violations(rtype, meta)
        warnings: list[str] = []
        unknown = self.schemas.unknown_fields(obj)
        if unknown:
            mode = request.query.get("fieldValidation", "Warn")
            if mode == "Strict":
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise bad_request(
                    f'{rtype.kind} in version "{path.version}" cannot be handled as a {rtype.kind}: strict decoding error: {fields}'
                )
            prune(obj, unknown)
            if mode != "Ignore":
                warnings = [f'unknown field "{u}"' for u in unknown]
        _default(rtype, obj)
        self.schemas.apply_defaults(obj)
        problems += self.schemas.violations(obj)
        if (rtype.group, rtype.plural) == CRD:
            problems += _crd_violations(obj)
        if problems:
            raise invalid(rtype, str(meta.get("name") or ""), problems)
        # Validating admission webhooks run last, on an object that passed validation.
        self.faults.call_webhook(path)
        return obj, warnings


def _metadata_violations(rtype: ResourceType, meta: Obj) -> list[Violation]:
    problems = []
    name = meta.get("name")
    if not name:
        problems.append(
            Violation("metadata.name", "name or generateName is required", CauseReason.REQUIRED)
        )
    elif not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            Violation(
                "metadata.name",
                f"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                f"and must start and end with an alphanumeric character, got {json.dumps(name)}",
            )
        )
    elif rtype.kind == "Namespace" and (len(name) > 63 or not _DNS_LABEL.fullmatch(name)):
        problems.append(
            Violation(
                "metadata.name",
                f"must be an RFC 1123 label (at most 63 characters, no dots), got {json.dumps(name)}",
            )
        )
    elif rtype.kind == "Service" and (len(name) > 63 or not _DNS1035_LABEL.fullmatch(name)):
        # ValidateServiceName is NameIsDNS1035Label (pkg/apis/core/validation).
        problems.append(
            Violation(
                "metadata.name",
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character, "
                f"got {json.dumps(name)}",
            )
        )
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(
                Violation(
                    f"metadata.{field}", f"must be a map of strings, got {json.dumps(values)}"
                )
            )
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                problems.append(
                    Violation(f"metadata.{field}.{key}", f"must be string, got {json.dumps(value)}")
                )
            elif field == "labels" and not _label_value(value):
                problems.append(
                    Violation(
                        f"metadata.labels.{key}",
                        "a valid label must be an empty string or consist of alphanumeric "
                        "characters, '-', '_' or '.', and must start and end with an "
                        f"alphanumeric character, got {json.dumps(value)}",
                    )
                )
            if not _qualified_name(key):
                problems.append(
                    Violation(
                        f"metadata.{field}",
                        "name part must consist of alphanumeric characters, '-', '_' or '.', "
                        "and must start and end with an alphanumeric character, with an "
                        f"optional DNS subdomain prefix and '/', got {json.dumps(key)}",
                    )
                )
    return problems


def _qualified_name(key: object) -> bool:
    """IsQualifiedName: ``[prefix/]name``, the keys of labels and annotations."""
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _label_value(value: str) -> bool:
    """IsValidLabelValue: at most 63 characters, empty allowed."""
    return len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


def _default(rtype: ResourceType, obj: Obj) -> None:
    """The defaults the real API server fills in that clients read back."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if rtype.kind == "Deployment":
        # SetDefaults_Deployment (pkg/apis/apps/v1/defaults.go)
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _default_pod_spec(template["spec"])
    elif rtype.kind == "Pod":
        _default_pod_spec(spec)
    elif rtype.kind == "Service":
        spec.setdefault("type", "ClusterIP")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])


def _default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec, _Container, _Probe and _ContainerPort (pkg/apis/core/v1/defaults.go),
    and resource quantities in their canonical form."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _default_container(container)


def _default_container(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image") or "")
    name_part = image.rsplit("/", 1)[-1]
    tag = name_part.split(":", 1)[1] if ":" in name_part and "@" not in image else ""
    latest = "@" not in image and tag in ("", "latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe_field in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_field)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")
    container.setdefault("resources", {})
    _canonical_resources(container)


def canonical_quantities(obj: Obj) -> None:
    """Resource quantities of a Deployment's or Pod's containers in canonical form, in place
    (the form the server stores, and so the one applied values are compared in)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        spec = template["spec"]
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _canonical_resources(container)


def _canonical_resources(container: Obj) -> None:
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return
    for kind in ("requests", "limits"):
        values = resources.get(kind)
        if isinstance(values, dict):
            for name, value in list(values.items()):
                try:
                    values[name] = quantity.canonical(value)
                except quantity.QuantityError as exc:
                    raise bad_request(str(exc)) from None


def _crd_violations(crd: Obj) -> list[Violation]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    problems = []
    for field in ("plural", "kind"):
        if not names.get(field):
            problems.append(
                Violation(f"spec.names.{field}", "required value is missing", CauseReason.REQUIRED)
            )
    if not spec.get("group"):
        problems.append(Violation("spec.group", "required value is missing", CauseReason.REQUIRED))
    if not spec.get("versions"):
        problems.append(
            Violation("spec.versions", "must have at least one version", CauseReason.REQUIRED)
        )
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not problems and crd["metadata"].get("name") != expected:
        problems.append(
            Violation(
                "metadata.name",
                f'must be spec.names.plural+"."+spec.group: {expected}, got {crd["metadata"].get("name")!r}',
            )
        )
    return problems


def crd_status(crd: Obj) -> Obj:
    names = (crd.get("spec") or {}).get("names") or {}
    return {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": [
            v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")
        ],
    }
