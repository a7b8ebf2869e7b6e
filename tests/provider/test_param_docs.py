"""Every public operator, sensor, trigger, hook and notifier documents each parameter it takes.

The classes are found from the provider info Airflow reads (``get_provider_info``), so a new
module listed there is covered without touching this test. A parameter is documented by a
``:param name:`` entry in the docstring of the class whose ``__init__`` declares it (or of that
``__init__``); subclasses that only add parameters document only those.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator

import pytest
from airflow.sdk import BaseHook, BaseNotifier, BaseOperator
from airflow.triggers.base import BaseTrigger

from airflow_canary import get_provider_info

#: kinds whose parameters must be keyword-only (a notifier wraps another one positionally)
KEYWORD_ONLY = (BaseOperator, BaseTrigger, BaseHook)
PUBLIC_KINDS = (*KEYWORD_ONLY, BaseNotifier)
_PARAM = re.compile(r":param\s+(?:[^:\s]+\s+)?(\w+):")


def _modules() -> list[str]:
    info = get_provider_info()
    names = [
        module
        for section in ("operators", "sensors", "triggers", "hooks")
        for entry in info[section]
        for module in entry["python-modules"]
    ]
    names += [path.rsplit(".", 1)[0] for path in info["notifications"]]
    names += [t["hook-class-name"].rsplit(".", 1)[0] for t in info["connection-types"]]
    return list(dict.fromkeys(names))


def _is_public_kind(cls: type) -> bool:
    # The async hooks are plain classes (like the cncf provider's AsyncKubernetesHook's users).
    return issubclass(cls, PUBLIC_KINDS) or cls.__name__.endswith("Hook")


def public_classes() -> list[type]:
    found: list[type] = []
    for module_name in _modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ == module_name
                and not name.startswith("_")
                and _is_public_kind(value)
            ):
                found.append(value)
    return found


def _own_inits(cls: type) -> Iterator[tuple[type, list[inspect.Parameter]]]:
    """Each class of the product in ``cls``'s MRO that declares ``__init__``, with its parameters."""
    for owner in cls.__mro__:
        if not owner.__module__.startswith("airflow_canary") or "__init__" not in vars(owner):
            continue
        parameters = list(inspect.signature(vars(owner)["__init__"]).parameters.values())[1:]
        yield (
            owner,
            [p for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)],
        )


def _documented(owner: type) -> set[str]:
    init = vars(owner)["__init__"]
    text = (vars(owner).get("__doc__") or "") + (inspect.getdoc(init) or "")
    return set(_PARAM.findall(text))


CLASSES = public_classes()


def test_the_walk_finds_every_kind_of_public_class() -> None:
    names = {cls.__name__ for cls in CLASSES}
    expected = {
        "SetCanaryWeightOperator",
        "RollbackCanaryOperator",
        "DeployModelVersionOperator",
        "BranchCanaryHealthOperator",
        "RolloutApprovalOperator",
        "CanaryHealthSensor",
        "CanaryHealthTrigger",
        "DeploymentReadyTrigger",
        "IstioHook",
        "AsyncIstioHook",
        "PrometheusHook",
        "RolloutNotifier",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_parameter_has_a_param_entry(cls: type) -> None:
    missing = {
        owner.__qualname__: sorted(p.name for p in parameters if p.name not in _documented(owner))
        for owner, parameters in _own_inits(cls)
    }
    assert not any(missing.values()), f"parameters without a ':param name:' entry: {missing}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_no_param_entry_names_a_parameter_that_does_not_exist(cls: type) -> None:
    accepted = {p.name for _, parameters in _own_inits(cls) for p in parameters}
    stale = {
        owner.__qualname__: sorted(_documented(owner) - accepted) for owner, _ in _own_inits(cls)
    }
    assert not any(stale.values()), f"':param' entries for no parameter: {stale}"


@pytest.mark.parametrize(
    "cls",
    [cls for cls in CLASSES if issubclass(cls, KEYWORD_ONLY) or cls.__name__.endswith("Hook")],
    ids=lambda cls: cls.__name__,
)
def test_every_parameter_is_keyword_only(cls: type) -> None:
    positional = {
        owner.__qualname__: [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY]
        for owner, parameters in _own_inits(cls)
    }
    assert not any(positional.values()), f"parameters that may be passed by position: {positional}"
