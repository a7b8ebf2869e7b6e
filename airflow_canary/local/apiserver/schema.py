"""Validation of objects written to the local mesh: CRD openAPIV3Schemas learnt from applied CRDs, plus built-in checks."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from airflow_canary.local.apiserver.builtin_fields import structural_schema
from airflow_canary.timestamps import parse_timestamp

Schema = dict[str, Any]
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class CauseReason(str, Enum):
    """The ``details.causes[].reason`` values of a Kubernetes Invalid Status."""

    REQUIRED = "FieldValueRequired"
    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    TYPE_INVALID = "FieldValueTypeInvalid"
    TOO_MANY = "FieldValueTooMany"
    TOO_LONG = "FieldValueTooLong"
    FORBIDDEN = "FieldValueForbidden"


@dataclass(frozen=True)
class Violation:
    """One reason an object is invalid: the field path, what is wrong, and the Kubernetes cause reason."""

    field: str
    message: str
    reason: CauseReason = CauseReason.INVALID

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, wanted: str) -> bool:
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "boolean":
        return isinstance(value, bool)
    if wanted == "integer":
        # JSON decoders may hand 10.0 for 10; the API server accepts integral numbers.
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if wanted == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


# -- CEL rules --------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go/CEL duration string such as ``1.5s`` or ``1h30m``; ValueError if malformed."""
    body = text[1:] if text[:1] in "+-" else text
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise ValueError(f"invalid duration {text!r}, expected e.g. 500ms, 1s, 1m30s")
    return -total if text.startswith("-") else total


def _min_duration_1ms(value: Any) -> bool:
    try:
        return parse_duration(str(value)) >= 1e-3
    except ValueError:
        return False


#: The CEL rules that appear in Istio's VirtualService/DestinationRule CRDs, as Python predicates.
#: Other rules are not evaluated (CEL is not implemented); they are counted in ``skipped_rules``.
KNOWN_CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "duration(self) >= duration('1ms')": _min_duration_1ms,
    '!self.contains("*")': lambda v: "*" not in str(v),
    'self.all(key, !key.contains("*"))': lambda v: all("*" not in str(k) for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(str(k)) != 0 for k in v),
}


# -- the schema walker ------------------------------------------------------------------------


class _Walker:
    """Validates a value against a structural openAPIV3Schema the way the API server does."""

    def __init__(self, skipped_rules: set[str]) -> None:
        self.skipped_rules = skipped_rules

    def check(self, value: Any, schema: Schema, path: str) -> Iterator[Violation]:
        if value is None:
            if schema.get("nullable"):
                return
            if schema.get("type") or schema.get("x-kubernetes-int-or-string"):
                expected = (
                    "integer or string"
                    if schema.get("x-kubernetes-int-or-string")
                    else schema["type"]
                )
                yield Violation(path, f"must be {expected}, got null", CauseReason.TYPE_INVALID)
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not (_has_type(value, "integer") or isinstance(value, str)):
                yield Violation(
                    path, f"must be integer or string, got {_show(value)}", CauseReason.TYPE_INVALID
                )
                return
        elif "type" in schema and not _has_type(value, schema["type"]):
            yield Violation(
                path, f"must be {schema['type']}, got {_show(value)}", CauseReason.TYPE_INVALID
            )
            return
        yield from self._value_constraints(value, schema, path)
        if isinstance(value, dict):
            yield from self._object(value, schema, path)
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                yield from self.check(item, schema["items"], f"{path}[{i}]")
        yield from self._combinators(value, schema, path)
        for rule in schema.get("x-kubernetes-validations") or []:
            predicate = KNOWN_CEL_RULES.get(rule.get("rule", ""))
            if predicate is None:
                self.skipped_rules.add(rule.get("rule", ""))
                continue
            try:
                ok = predicate(value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                message = rule.get("message") or f"failed rule: {rule.get('rule')}"
                yield Violation(path, f"{message}, got {_show(value)}")

    def _value_constraints(self, value: Any, schema: Schema, path: str) -> Iterator[Violation]:
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(_show(v) for v in schema["enum"])
            yield Violation(
                path, f"must be one of {allowed}, got {_show(value)}", CauseReason.NOT_SUPPORTED
            )
        if _has_type(value, "number") and not isinstance(value, str):
            low, high = schema.get("minimum"), schema.get("maximum")
            fmt = schema.get("format")
            bounds = {"int32": _INT32, "uint32": _UINT32, "int64": _INT64}.get(fmt or "")
            if bounds and _has_type(value, "integer"):
                low = bounds[0] if low is None else max(low, bounds[0])
                high = bounds[1] if high is None else min(high, bounds[1])
            too_low = low is not None and (
                value <= low if schema.get("exclusiveMinimum") else value < low
            )
            too_high = high is not None and (
                value >= high if schema.get("exclusiveMaximum") else value > high
            )
            if too_low or too_high:
                lo = "" if low is None else f"{low}"
                hi = "" if high is None else f"{high}"
                yield Violation(path, f"must be in the range {lo}..{hi}, got {_show(value)}")
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                yield Violation(
                    path,
                    f"must have at most {schema['maxLength']} characters, got {len(value)}",
                    CauseReason.TOO_LONG,
                )
            if "minLength" in schema and len(value) < schema["minLength"]:
                yield Violation(
                    path, f"must have at least {schema['minLength']} characters, got {_show(value)}"
                )
            if "pattern" in schema and not re.search(schema["pattern"], value):
                yield Violation(path, f"must match {schema['pattern']!r}, got {_show(value)}")
            problem = _format_problem(schema.get("format"), value)
            if problem:
                yield Violation(path, f"{problem}, got {_show(value)}")
        if isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                yield Violation(
                    path,
                    f"must have at most {schema['maxItems']} items, got {len(value)}",
                    CauseReason.TOO_MANY,
                )
            if "minItems" in schema and len(value) < schema["minItems"]:
                yield Violation(
                    path, f"must have at least {schema['minItems']} items, got {len(value)}"
                )
        if isinstance(value, dict):
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                yield Violation(
                    path,
                    f"must have at most {schema['maxProperties']} entries, got {len(value)}",
                    CauseReason.TOO_MANY,
                )

    def _object(self, value: dict[str, Any], schema: Schema, path: str) -> Iterator[Violation]:
        props: dict[str, Schema] = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                yield Violation(
                    _join(path, name), "required value is missing", CauseReason.REQUIRED
                )
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                yield from self.check(item, props[key], _join(path, key))
            elif isinstance(extra, dict):
                yield from self.check(item, extra, _join(path, key))

    def _combinators(self, value: Any, schema: Schema, path: str) -> Iterator[Violation]:
        for sub in schema.get("allOf") or []:
            yield from self.check(value, sub, path)
        if "anyOf" in schema and not any(self._matches(value, s) for s in schema["anyOf"]):
            yield Violation(
                path, f"must match at least one of the allowed forms, got {_show(value)}"
            )
        if "oneOf" in schema:
            matched = sum(1 for s in schema["oneOf"] if self._matches(value, s))
            if matched != 1:
                names = _required_names(schema["oneOf"])
                if names and isinstance(value, dict):
                    present = [n for n in names if n in value]
                    yield Violation(
                        path,
                        f"at most one of {', '.join(names)} may be set, got {', '.join(present) or 'none'}",
                        CauseReason.FORBIDDEN,
                    )
                else:
                    yield Violation(path, "must match exactly one of the allowed forms")
        if "not" in schema and self._matches(value, schema["not"]):
            yield Violation(
                path,
                f"must not match the forbidden form, got {_show(value)}",
                CauseReason.FORBIDDEN,
            )

    def _matches(self, value: Any, schema: Schema) -> bool:
        return next(iter(self.check(value, schema, "")), None) is None

    def unknown_fields(self, value: Any, schema: Schema, path: str) -> Iterator[str]:
        """Paths of fields the schema does not declare (pruned by the server, errors under Strict)."""
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(value, dict) and schema.get("type") == "object":
            props: dict[str, Schema] = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    yield from self.unknown_fields(item, props[key], _join(path, key))
                elif isinstance(extra, dict):
                    yield from self.unknown_fields(item, extra, _join(path, key))
                elif not extra and props is not None and "properties" in schema:
                    yield _join(path, key)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                yield from self.unknown_fields(item, schema["items"], f"{path}[{i}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _required_names(branches: list[Schema]) -> list[str]:
    """Field names of an Istio-style 'at most one of' oneOf, or [] when it is of another form."""
    names: list[str] = []
    for branch in branches:
        if set(branch) == {"required"}:
            names += branch["required"]
        elif set(branch) != {"not"}:
            return []
    return names


def _format_problem(fmt: str | None, value: str) -> str | None:
    if fmt == "date-time":
        try:
            parse_timestamp(value)
        except ValueError:
            return "must be an RFC 3339 date-time"
    elif fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "must be base64-encoded bytes"
    return None


# -- built-in checks --------------------------------------------------------------------------

_STR: Schema = {"type": "string"}
_STR_MAP: Schema = {"type": "object", "additionalProperties": _STR}
_PORT: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}
_DESTINATION: Schema = {
    "type": "object",
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "minLength": 1},
        "subset": _STR,
        "port": {"type": "object", "properties": {"number": _PORT}},
    },
}
_HTTP_ROUTE: Schema = {
    "type": "object",
    "properties": {
        "name": _STR,
        "match": {"type": "array", "items": {"type": "object"}},
        "route": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["destination"],
                "properties": {
                    "destination": _DESTINATION,
                    "weight": {"type": "integer", "minimum": 0, "maximum": 100},
                    "headers": {"type": "object"},
                },
            },
        },
        "timeout": {"type": "string"},
        "retries": {"type": "object"},
    },
}
_CONTAINER: Schema = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "image": {"type": "string", "minLength": 1},
        "command": {"type": "array", "items": _STR},
        "args": {"type": "array", "items": _STR},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _STR, "value": _STR},
            },
        },
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "containerPort": _PORT,
                    "name": _STR,
                    "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                },
            },
        },
    },
}
_POD_SPEC: Schema = {
    "type": "object",
    "required": ["containers"],
    "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}},
}

#: (apiVersion group, kind) -> a small structural schema written for this project.
BUILTIN_SCHEMAS: dict[tuple[str, str], Schema] = {
    ("networking.istio.io", "VirtualService"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "hosts": {"type": "array", "items": _STR},
                    "gateways": {"type": "array", "items": _STR},
                    "http": {"type": "array", "items": _HTTP_ROUTE},
                },
            }
        },
    },
    ("networking.istio.io", "DestinationRule"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["host"],
                "properties": {
                    "host": {"type": "string", "minLength": 1},
                    "subsets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "labels": _STR_MAP,
                            },
                        },
                    },
                    "trafficPolicy": {"type": "object"},
                },
            }
        },
    },
    ("apps", "Deployment"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["selector", "template"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0},
                    "selector": {"type": "object", "properties": {"matchLabels": _STR_MAP}},
                    "template": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "metadata": {"type": "object", "properties": {"labels": _STR_MAP}},
                            "spec": _POD_SPEC,
                        },
                    },
                },
            }
        },
    },
    ("", "Service"): {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "selector": _STR_MAP,
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                    "ports": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "properties": {
                                "port": _PORT,
                                "targetPort": {"x-kubernetes-int-or-string": True},
                                "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                                "name": _STR,
                            },
                        },
                    },
                },
            }
        },
    },
    ("", "Pod"): {"type": "object", "required": ["spec"], "properties": {"spec": _POD_SPEC}},
}


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class CRDSchemas:
    """Schemas of custom resources, learnt from CustomResourceDefinitions, plus built-in checks."""

    def __init__(self) -> None:
        # (group, version, kind) -> openAPIV3Schema
        self._schemas: dict[tuple[str, str, str], Schema] = {}
        self._crd_keys: dict[str, list[tuple[str, str, str]]] = {}
        #: CEL rules met during validation that are not evaluated.
        self.skipped_rules: set[str] = set()

    def add_crd(self, crd: dict[str, Any]) -> None:
        """Learn (or relearn) the schemas of every version of one CRD."""
        spec = crd.get("spec") or {}
        group, kind = spec.get("group", ""), (spec.get("names") or {}).get("kind", "")
        name = (crd.get("metadata") or {}).get(
            "name"
        ) or f"{(spec.get('names') or {}).get('plural')}.{group}"
        self.remove_crd(name)
        keys = []
        for version in spec.get("versions") or []:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            key = (group, version["name"], kind)
            self._schemas[key] = schema
            keys.append(key)
        self._crd_keys[name] = keys

    def remove_crd(self, name: str) -> None:
        """Forget the schemas of the CRD named ``name`` (e.g. ``virtualservices.networking.istio.io``)."""
        for key in self._crd_keys.pop(name, []):
            self._schemas.pop(key, None)

    def knows(self, api_version: str, kind: str) -> bool:
        """Whether a CRD with a schema for this apiVersion and kind was applied."""
        group, version = _split_api_version(api_version)
        return (group, version, kind) in self._schemas

    def _schema_for(self, obj: dict[str, Any]) -> Schema | None:
        group, version = _split_api_version(str(obj.get("apiVersion", "")))
        kind = str(obj.get("kind", ""))
        return self._schemas.get((group, version, kind)) or BUILTIN_SCHEMAS.get((group, kind))

    def violations(self, obj: dict[str, Any]) -> list[Violation]:
        """Everything invalid in ``obj`` (metadata is checked by the API server, not here)."""
        schema = self._schema_for(obj)
        if schema is None:
            return []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        walker = _Walker(self.skipped_rules)
        found = list(walker.check(body, {**schema, "properties": _without_meta(schema)}, ""))
        return list(dict.fromkeys(found))

    def apply_defaults(self, obj: dict[str, Any]) -> None:
        """Fill in the ``default`` of every absent field the object's CRD schema declares, in place.

        Structural-schema defaulting as kube-apiserver does it (k8s.io/apiextensions-apiserver
        ``pkg/apiserver/schema/defaulting``): depth-first, a default applies only where the parent
        object exists, and defaults inside a default are applied too. Only CRD-backed kinds.
        """
        group, version = _split_api_version(str(obj.get("apiVersion", "")))
        schema = self._schemas.get((group, version, str(obj.get("kind", ""))))
        if schema is None:
            return
        for key, sub in _without_meta(schema).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _apply_defaults(obj[key], sub)

    def validate(self, obj: dict[str, Any]) -> list[str]:
        """Messages such as ``spec.http[0].route[0].weight: must be integer, got "ten"``; [] when valid."""
        return [str(v) for v in self.violations(obj)]

    def unknown_fields(self, obj: dict[str, Any]) -> list[str]:
        """Paths of fields the object's schema does not declare: a CRD's, or a built-in kind's."""
        group, version = _split_api_version(str(obj.get("apiVersion", "")))
        kind = str(obj.get("kind", ""))
        schema = self._schemas.get((group, version, kind)) or structural_schema(group, kind)
        if schema is None:
            return []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        return list(
            _Walker(set()).unknown_fields(body, {**schema, "properties": _without_meta(schema)}, "")
        )


def _apply_defaults(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in (schema.get("properties") or {}):
                    _apply_defaults(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _apply_defaults(item, schema["items"])


def _without_meta(schema: Schema) -> dict[str, Schema]:
    return {
        k: v
        for k, v in (schema.get("properties") or {}).items()
        if k not in ("apiVersion", "kind", "metadata")
    }


def prune(obj: dict[str, Any], paths: list[str]) -> None:
    """Remove the fields at ``paths`` (as returned by ``unknown_fields``) from ``obj`` in place."""
    for path in sorted(paths, key=len, reverse=True):
        parent: Any = obj
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        for part in parts[:-1]:
            parent = parent[int(part[1:-1])] if part.startswith("[") else parent.get(part)
            if parent is None:
                break
        if isinstance(parent, dict):
            parent.pop(parts[-1], None)


def load_crd_dir(path: str | Path) -> CRDSchemas:
    """Schemas of every CustomResourceDefinition in the YAML files of a directory."""
    schemas = CRDSchemas()
    for file in sorted(Path(path).glob("*.y*ml")):
        for doc in yaml.load_all(file.read_text(), Loader=_YAML_LOADER):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                schemas.add_crd(doc)
    return schemas
