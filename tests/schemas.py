"""Validation of objects the product writes against published Istio schemas.

Always: the pydantic models of ``cloudcoil-models-istio``, generated from Istio's CRDs
(``networking.istio.io`` v1, v1beta1 and v1alpha3). A model accepts unknown keys and coerces
types (``"10"`` to ``10``), which a real API server with ``fieldValidation=Strict`` would
refuse, so the check also requires the validated model to dump back to exactly the input.
When ``$CANARY_ISTIO_CRDS`` is set: the CRDs' own openAPIV3Schemas and CEL rules as well.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import pydantic

from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir
from tests.fixtures.crds import ISTIO_CRDS_ENV, crd_dir

_VERSIONS = ("v1", "v1beta1", "v1alpha3")


def _model(api_version: str, kind: str) -> type[pydantic.BaseModel]:
    group, _, version = api_version.partition("/")
    if group != "networking.istio.io" or version not in _VERSIONS:
        raise ValueError(f"not an Istio networking apiVersion: {api_version!r}")
    module = importlib.import_module(f"cloudcoil.models.istio.networking.{version}")
    model: type[pydantic.BaseModel] = getattr(module, kind)
    return model


def _differences(given: Any, dumped: Any, path: str) -> list[str]:
    if isinstance(given, dict) and isinstance(dumped, dict):
        problems = [f"{path}.{key}: unknown field" for key in given if key not in dumped]
        for key in given:
            if key in dumped:
                problems += _differences(given[key], dumped[key], f"{path}.{key}")
        return problems
    if isinstance(given, list) and isinstance(dumped, list) and len(given) == len(dumped):
        return [
            problem
            for index, (a, b) in enumerate(zip(given, dumped, strict=True))
            for problem in _differences(a, b, f"{path}[{index}]")
        ]
    if given != dumped or type(given) is not type(dumped):
        return [f"{path}: {given!r} is not of the schema's type (reads back as {dumped!r})"]
    return []


def istio_model_violations(obj: dict[str, Any]) -> list[str]:
    """Why ``obj`` (a whole VirtualService/DestinationRule document) fails Istio's published
    models, as ``path: reason`` lines; empty when it is valid."""
    model = _model(obj["apiVersion"], obj["kind"])
    try:
        parsed = model.model_validate(obj)
    except pydantic.ValidationError as exc:
        return [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return _differences(obj.get("spec"), dumped.get("spec"), "spec")


def assert_valid_istio(obj: dict[str, Any]) -> None:
    """Fail unless ``obj`` validates against Istio's published models and, when
    ``$CANARY_ISTIO_CRDS`` is set, against those CRDs too."""
    problems = istio_model_violations(obj)
    assert problems == [], f"{obj['kind']} invalid against cloudcoil-models-istio: {problems}"
    crds = crd_dir(ISTIO_CRDS_ENV)
    if crds is not None:
        schemas = _crd_schemas(str(crds))
        crd_problems = schemas.validate(obj) + [
            f"{path}: unknown field" for path in schemas.unknown_fields(obj)
        ]
        assert crd_problems == [], (
            f"{obj['kind']} invalid against the CRDs in {crds}: {crd_problems}"
        )


@functools.cache
def _crd_schemas(directory: str) -> CRDSchemas:
    return load_crd_dir(directory)
