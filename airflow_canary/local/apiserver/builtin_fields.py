"""The fields of built-in kinds (Deployment, Service, Pod, Namespace), read from the kubernetes client's generated models, so unknown fields in them are found as the API server finds them."""

from __future__ import annotations

import functools
import re
from typing import Any

Schema = dict[str, Any]

#: (group, kind) -> the model class name in kubernetes.client.models.
MODELS = {
    ("apps", "Deployment"): "V1Deployment",
    ("", "Service"): "V1Service",
    ("", "Pod"): "V1Pod",
    ("", "Namespace"): "V1Namespace",
}
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")


def structural_schema(group: str, kind: str) -> Schema | None:
    """An OpenAPI-like structural schema (object properties and list items only) of a built-in
    kind, or None for kinds not listed in ``MODELS``."""
    name = MODELS.get((group, kind))
    return _schema(name, ()) if name else None


@functools.cache
def _schema(type_name: str, seen: tuple[str, ...]) -> Schema:
    from kubernetes.client import models

    if match := _LIST.match(type_name):
        return {"type": "array", "items": _schema(match[1], seen)}
    if match := _DICT.match(type_name):
        return {"type": "object", "additionalProperties": _schema(match[2], seen)}
    model = getattr(models, type_name, None)
    if model is None or type_name in seen:
        # Primitives, int-or-string ("object") and recursive types accept anything.
        return {"x-kubernetes-preserve-unknown-fields": True}
    properties = {
        model.attribute_map[attribute]: _schema(field_type, (*seen, type_name))
        for attribute, field_type in model.openapi_types.items()
    }
    return {"type": "object", "properties": properties}
