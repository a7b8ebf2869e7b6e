"""Hostile values given to every public operator, sensor, check and ``canary_rollout()``.

Property: a value the reference rule (tests/hostile/values.py) calls valid is accepted; any other
value raises a ``ValueError`` (the product's RoutingError, AnalysisError, ManifestError,
DurationError or RolloutPlanError, never a bare TypeError or OverflowError) whose message shows
the value, when the DAG file is parsed, before any task runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_canary.analysis import (
    ErrorRateCheck,
    LatencyCheck,
    ModelAccuracyCheck,
    PredictionDriftCheck,
    PromQLCheck,
    PromQLRatioCheck,
)
from airflow_canary.durations import to_seconds
from airflow_canary.operators.analysis import BranchCanaryHealthOperator
from airflow_canary.operators.deploy import DeployModelVersionOperator, ScaleDeploymentOperator
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
)
from airflow_canary.sensors.health import CanaryHealthSensor
from tests.hostile import values as rules
from tests.hostile.values import ANYTHING

HOSTILE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

Build = Callable[[Any], object]


def judged(build: Build, value: Any, valid: bool) -> None:
    """``build(value)`` succeeds when ``valid``, else raises a ValueError naming ``value``."""
    if valid:
        build(value)
        return
    with pytest.raises(ValueError) as raised:
        build(value)
    assert repr(value) in str(raised.value), (
        f"the error does not show the value {value!r}: {raised.value}"
    )


_ids = iter(range(10**9))


def _task_id() -> str:
    return f"t{next(_ids)}"


# ---- traffic operators ---------------------------------------------------------------------

TRAFFIC = (
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
    PromoteCanaryOperator,
    RollbackCanaryOperator,
)


def _traffic(cls: type, **kwargs: Any) -> object:
    base: dict[str, Any] = {"task_id": _task_id(), "virtual_service": "model", "namespace": "ml"}
    if cls is SetCanaryWeightOperator:
        base["weight"] = 10
    return cls(**{**base, **kwargs})


@pytest.mark.parametrize("cls", TRAFFIC, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING.filter(lambda v: v is not None))
def test_virtual_service_is_a_kubernetes_object_name(cls: type, value: Any) -> None:
    judged(lambda v: _traffic(cls, virtual_service=v), value, rules.dns1123_subdomain(value))


@pytest.mark.parametrize("cls", TRAFFIC, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING)
def test_namespace_is_a_namespace_name(cls: type, value: Any) -> None:
    judged(lambda v: _traffic(cls, namespace=v), value, rules.dns1123_label(value))


@pytest.mark.parametrize("param,other", [("stable_subset", "v2"), ("canary_subset", "v1")])
@HOSTILE
@given(cls=st.sampled_from(TRAFFIC), value=ANYTHING)
def test_subsets_are_dns_labels_and_differ(cls: type, param: str, other: str, value: Any) -> None:
    judged(
        lambda v: _traffic(cls, **{param: v}),
        value,
        rules.dns1123_label(value) and value != other,
    )


@HOSTILE
@given(
    cls=st.sampled_from(TRAFFIC),
    value=ANYTHING.filter(lambda v: v is not None and not isinstance(v, str)),
)
def test_route_name_is_a_name_or_a_list_of_names(cls: type, value: Any) -> None:
    names = value if isinstance(value, (list, tuple)) else None
    valid = (
        names is not None
        and len(names) > 0
        and all(isinstance(n, str) and n.strip() for n in names)
        and len(set(names)) == len(names)
        and not any(n.startswith("airflow-canary-header-") for n in names)
    )
    if valid or not names:
        judged(lambda v: _traffic(cls, route_name=v), value, valid)
    else:  # a bad item of a list: the item is named
        with pytest.raises(ValueError):
            _traffic(cls, route_name=value)


@HOSTILE
@given(value=ANYTHING)
def test_weight_is_an_integer_percentage(value: Any) -> None:
    judged(lambda v: _traffic(SetCanaryWeightOperator, weight=v), value, rules.weight(value))


@HOSTILE
@given(value=ANYTHING)
def test_header_is_an_http_header_name(value: Any) -> None:
    valid = rules.header_name(value) or value in (":authority", ":method", ":path", ":scheme")
    judged(lambda v: _traffic(SetHeaderRouteOperator, header=v), value, valid)


@HOSTILE
@given(value=ANYTHING)
def test_header_value_is_an_http_field_value(value: Any) -> None:
    # Exact match: any field value, the empty one too; CR, LF, NUL never reach a server.
    judged(lambda v: _traffic(SetHeaderRouteOperator, value=v), value, rules.field_value(value))


@HOSTILE
@given(value=ANYTHING)
def test_match_type_is_exact_prefix_or_regex(value: Any) -> None:
    valid = isinstance(value, str) and value.lower() in ("exact", "prefix", "regex")
    if valid and value.lower() == "prefix":
        valid = True  # the default value "v2" is a non-empty prefix
    if valid and value.lower() == "regex":
        valid = True  # "v2" compiles as RE2
    judged(lambda v: _traffic(SetHeaderRouteOperator, match_type=v), value, valid)


@HOSTILE
@given(value=ANYTHING)
def test_remove_is_a_flag(value: Any) -> None:
    judged(lambda v: _traffic(SetHeaderRouteOperator, remove=v), value, rules.flag(value))


@HOSTILE
@given(value=ANYTHING)
def test_router_is_istio_or_gateway_api(value: Any) -> None:
    valid = isinstance(value, str) and value.strip().lower() == "istio"
    # Any other router needs http_route instead of virtual_service: refused too, naming it.
    if isinstance(value, str) and value.strip().lower() == "gateway-api":
        with pytest.raises(ValueError, match="http_route"):
            _traffic(PromoteCanaryOperator, router=value)
        return
    judged(lambda v: _traffic(PromoteCanaryOperator, router=v), value, valid)


@HOSTILE
@given(value=ANYTHING.filter(lambda v: v is not None))
def test_gateway_api_backends_are_service_names_and_namespaces(value: Any) -> None:
    def build(param: str) -> Build:
        base = {
            "task_id": _task_id(),
            "router": "gateway-api",
            "http_route": "model",
            "namespace": "ml",
            "stable_subset": "model-v1",
            "canary_subset": "model-v2",
        }
        return lambda v: PromoteCanaryOperator(**{**base, param: v})

    # "" (a template rendered empty) means the HTTPRoute's own namespace, as documented.
    judged(build("backend_namespace"), value, value == "" or rules.dns1123_label(value))
    judged(build("http_route"), value, rules.dns1123_subdomain(value))
    judged(build("stable_subset"), value, rules.dns1035_label(value) and value != "model-v2")


# ---- deploy operators ----------------------------------------------------------------------

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "model-v2"}}


@HOSTILE
@given(value=ANYTHING)
def test_deploy_namespace_and_durations(value: Any) -> None:
    def build(param: str) -> Build:
        return lambda v: DeployModelVersionOperator(
            task_id=_task_id(), manifest=DEPLOYMENT, **{param: v}
        )

    judged(build("namespace"), value, rules.dns1123_label(value))
    judged(build("timeout"), value, rules.duration(value))
    judged(build("poll_interval"), value, rules.duration(value))
    judged(build("wait_for_ready"), value, rules.flag(value))
    judged(build("force_conflicts"), value, rules.flag(value))
    judged(build("deferrable"), value, value is None or rules.flag(value))


@HOSTILE
@given(value=ANYTHING)
def test_scale_deployment_names_and_replicas(value: Any) -> None:
    def build(param: str) -> Build:
        base = {"task_id": _task_id(), "deployment": "model-v1", "replicas": 0}
        return lambda v: ScaleDeploymentOperator(**{**base, param: v})

    judged(build("deployment"), value, rules.dns1123_subdomain(value))
    judged(build("namespace"), value, rules.dns1123_label(value))
    judged(build("replicas"), value, rules.count(value) and value <= 2**31 - 1)


@HOSTILE
@given(value=ANYTHING)
def test_durations_read_by_one_parser(value: Any) -> None:
    judged(lambda v: to_seconds("bake_time", v), value, rules.duration(value))


# ---- analysis: sensor, branch operator, checks ---------------------------------------------

ANALYSES = (CanaryHealthSensor, BranchCanaryHealthOperator)


def _analysis(cls: type, **kwargs: Any) -> object:
    base: dict[str, Any] = {
        "task_id": _task_id(),
        "namespace": "ml",
        "checks": [ErrorRateCheck(max_rate=0.01)],
        "bake_time": 60,
        "poll_interval": 10,
        "virtual_service": "model",
    }
    if cls is BranchCanaryHealthOperator:
        base |= {"follow_task_ids_if_healthy": "a", "follow_task_ids_if_unhealthy": "b"}
    return cls(**{**base, **kwargs})


@pytest.mark.parametrize("cls", ANALYSES, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING)
def test_analysis_namespace_and_versions(cls: type, value: Any) -> None:
    judged(lambda v: _analysis(cls, namespace=v), value, rules.dns1123_label(value))
    judged(
        lambda v: _analysis(cls, stable_version=v),
        value,
        rules.label_value(value) and value != "v2",
    )
    judged(
        lambda v: _analysis(cls, canary_version=v),
        value,
        rules.label_value(value) and value != "v1",
    )


@pytest.mark.parametrize("cls", ANALYSES, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING)
def test_analysis_shapes_and_flags(cls: type, value: Any) -> None:
    # Wrong shapes: checks must be a list, judge_options a mapping, flags booleans.
    if not isinstance(value, (list, tuple)):
        judged(lambda v: _analysis(cls, checks=v), value, False)
    if value is not None and not isinstance(value, dict):
        judged(lambda v: _analysis(cls, judge_options=v), value, False)
    if not isinstance(value, str):
        judged(lambda v: _analysis(cls, judge=v), value, False)
    judged(lambda v: _analysis(cls, rollback_on_failure=v), value, rules.flag(value))
    judged(lambda v: _analysis(cls, deferrable=v), value, value is None or rules.flag(value))
    if value is not None:
        judged(lambda v: _analysis(cls, canary_weight=v), value, rules.weight(value))


@pytest.mark.parametrize("cls", ANALYSES, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING)
def test_analysis_durations(cls: type, value: Any) -> None:
    # bake_time must be at least one poll_interval (10 s here); timeout any valid duration.
    judged(lambda v: _analysis(cls, timeout=v), value, value is None or rules.duration(value))
    if not rules.duration(value):
        judged(lambda v: _analysis(cls, bake_time=v), value, False)
        judged(lambda v: _analysis(cls, poll_interval=v), value, False)


@pytest.mark.parametrize("cls", ANALYSES, ids=lambda c: c.__name__)
@HOSTILE
@given(value=ANYTHING.filter(lambda v: v is not None))
def test_dashboard_url_template_is_an_http_url(cls: type, value: Any) -> None:
    valid = (
        isinstance(value, str)
        and value.startswith(("http://", "https://"))
        and not any(c.isspace() or not c.isprintable() or c in "{}" for c in value)
    )
    judged(lambda v: _analysis(cls, dashboard_url_template=v), value, valid)


CHECKS: list[tuple[type, dict[str, Any], str, Callable[[Any], bool]]] = [
    (ErrorRateCheck, {"max_rate": 0.01}, "max_rate", rules.fraction),
    (ErrorRateCheck, {"max_rate": 0.01}, "max_increase", lambda v: v is None or rules.fraction(v)),
    (
        ErrorRateCheck,
        {"max_rate": 0.01},
        "max_ratio",
        lambda v: v is None or rules.finite_at_least(1)(v),
    ),
    (ErrorRateCheck, {"max_rate": 0.01}, "min_requests", rules.count),
    (ErrorRateCheck, {"max_rate": 0.01}, "name", rules.check_name),
    (LatencyCheck, {"max_ms": 500}, "max_ms", rules.finite_at_least(0, strict=True)),
    (
        LatencyCheck,
        {"max_ms": 500},
        "quantile",
        lambda v: rules.finite_at_least(0, strict=True)(v) and v < 1,
    ),
    (ModelAccuracyCheck, {"min_accuracy": 0.9}, "min_accuracy", rules.fraction),
    (ModelAccuracyCheck, {"min_accuracy": 0.9}, "version_label", rules.prometheus_label_name),
    (
        ModelAccuracyCheck,
        {"min_accuracy": 0.9},
        "namespace_label",
        lambda v: v is None or rules.prometheus_label_name(v),
    ),
    (PredictionDriftCheck, {"max_psi": 0.2}, "max_psi", rules.finite_at_least(0, strict=True)),
    (
        PromQLCheck,
        {"name": "q", "query": "up", "max_value": 1},
        "max_value",
        lambda v: v is None or rules.finite_at_least(-float("inf"))(v),
    ),
    (PromQLCheck, {"name": "q", "query": "up", "max_value": 1}, "higher_is_better", rules.flag),
    (
        PromQLRatioCheck,
        {
            "name": "r",
            "bad_query": 'a{v="{{ version }}"}',
            "total_query": 'b{v="{{ version }}"}',
            "max_rate": 0.1,
        },
        "max_rate",
        rules.fraction,
    ),
]


@pytest.mark.parametrize(
    "cls,base,param,rule", CHECKS, ids=[f"{c.__name__}.{p}" for c, _, p, _ in CHECKS]
)
@HOSTILE
@given(value=ANYTHING)
def test_check_parameters(
    cls: type, base: dict[str, Any], param: str, rule: Callable[[Any], bool], value: Any
) -> None:
    if value is None and param in base:  # the check's only limit left out
        with pytest.raises(ValueError, match=f"give at least one limit|{param} must be"):
            cls(**{**base, param: value})
        return
    judged(lambda v: cls(**{**base, param: v}), value, rule(value))


@HOSTILE
@given(value=ANYTHING)
def test_latency_buckets_are_a_list_of_positive_numbers(value: Any) -> None:
    valid = (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(rules.finite_at_least(0, strict=True)(b) for b in value)
    )
    if valid or not isinstance(value, (list, tuple)) or not value:
        judged(lambda v: LatencyCheck(max_ms=500, buckets_ms=v), value, valid)
    else:
        with pytest.raises(ValueError):
            LatencyCheck(max_ms=500, buckets_ms=value)


_PLACEHOLDER_JUNK = st.sampled_from(
    [
        "{{ namespace }}",
        "{{ version }}",
        "{{ interval }}",
        "{{ nope }}",
        "{{",
        "}}",
        "{{version",
        '"',
        "\\",
        "\n",
    ]
)


@HOSTILE
@given(
    parts=st.lists(
        st.one_of(_PLACEHOLDER_JUNK, st.text(alphabet='abc{}" ', max_size=4)), max_size=6
    )
)
def test_promql_templates_name_unknown_or_broken_placeholders(parts: list[str]) -> None:
    import re

    query = "".join(parts)
    known = re.sub(r"\{\{\s*(namespace|version|interval)\s*\}\}", "", query)
    valid = bool(query.strip()) and "{{" not in known and "}}" not in known
    judged(lambda q: PromQLCheck(name="q", query=q, max_value=1), query, valid)


# ---- canary_rollout() ----------------------------------------------------------------------

ROLLOUT_RULES: dict[str, Callable[[Any], bool]] = {
    "namespace": rules.dns1123_label,
    "virtual_service": rules.dns1123_subdomain,
    "stable_subset": lambda v: rules.dns1123_label(v) and v != "v2",
    "canary_subset": lambda v: rules.dns1123_label(v) and v != "v1",
    "stable_version": lambda v: v is None or (rules.label_value(v) and v != "v2"),
    "canary_version": lambda v: v is None or (rules.label_value(v) and v != "v1"),
    "decommission_stable": lambda v: v is False,  # True needs stable_deployment as well
    "rollback_in_trigger": rules.flag,
    "deferrable": lambda v: v is None or rules.flag(v),
    "stable_deployment": lambda v: v is None or rules.dns1123_subdomain(v),
}


@pytest.mark.parametrize("param", sorted(ROLLOUT_RULES))
@HOSTILE
@given(value=ANYTHING)
def test_canary_rollout_parameters(param: str, value: Any) -> None:
    from airflow.sdk import DAG

    from airflow_canary.rollout import canary_rollout

    def build(v: Any) -> object:
        kwargs = {"checks": [ErrorRateCheck(max_rate=0.01)], "virtual_service": "model", param: v}
        with DAG(_task_id(), schedule=None, start_date=datetime(2026, 1, 1)):
            return canary_rollout(**kwargs)

    if param == "virtual_service" and value is None:
        with pytest.raises(ValueError, match="virtual_service"):
            build(value)
        return
    judged(build, value, ROLLOUT_RULES[param](value))


@pytest.mark.parametrize(
    "param", ["steps", "checks", "notifiers", "approve_before", "approvers", "judge_options"]
)
@HOSTILE
@given(value=ANYTHING.filter(lambda v: not isinstance(v, (list, tuple))))
def test_canary_rollout_lists_and_mappings_refuse_other_shapes(param: str, value: Any) -> None:
    from airflow.sdk import DAG

    from airflow_canary.rollout import canary_rollout

    if param == "judge_options" and (value is None or isinstance(value, dict)):
        return
    if param in ("notifiers", "approvers") and value is None:
        return

    def build(v: Any) -> object:
        kwargs = {"checks": [ErrorRateCheck(max_rate=0.01)], "virtual_service": "model", param: v}
        if param == "approvers":
            kwargs["approve_before"] = [100]
        with DAG(_task_id(), schedule=None, start_date=datetime(2026, 1, 1)):
            return canary_rollout(**kwargs)

    if param == "checks" and value is None:
        with pytest.raises(ValueError, match="checks must"):
            build(value)
        return
    judged(build, value, False)


@HOSTILE
@given(value=ANYTHING)
def test_canary_rollout_bake_time(value: Any) -> None:
    """A bad duration is named; a good one shorter than a poll (15 s) is refused saying so."""
    from airflow.sdk import DAG

    from airflow_canary.rollout import canary_rollout

    def build(v: Any) -> object:
        with DAG(_task_id(), schedule=None, start_date=datetime(2026, 1, 1)):
            return canary_rollout(
                checks=[ErrorRateCheck(max_rate=0.01)], virtual_service="model", bake_time=v
            )

    if not rules.duration(value):
        judged(build, value, False)
    elif to_seconds("bake_time", value) < 15:
        with pytest.raises(ValueError, match="bake_time.* must be at least poll_interval"):
            build(value)
    else:
        build(value)


# ---- shadow phase: mirror, shadow analysis, shadow checks, judge options -------------------


@HOSTILE
@given(value=ANYTHING)
def test_mirror_percent_is_a_finite_number_0_to_100(value: Any) -> None:
    from airflow_canary.operators.traffic import SetMirrorOperator

    valid = rules.finite_at_least(0)(value) and value <= 100
    judged(lambda v: _traffic(SetMirrorOperator, percent=v), value, valid)


@HOSTILE
@given(value=ANYTHING)
def test_shadow_analysis_versions_and_options(value: Any) -> None:
    from airflow_canary.analysis.shadow import PredictionAgreementCheck
    from airflow_canary.sensors.shadow import ShadowAnalysisSensor

    def build(param: str) -> Build:
        base = {
            "task_id": _task_id(),
            "prediction_log": "file:///var/log/predictions/",
            "checks": [PredictionAgreementCheck(max_disagreement=0.05)],
        }
        return lambda v: ShadowAnalysisSensor(**{**base, param: v})

    judged(build("stable_version"), value, rules.label_value(value) and value != "v2")
    judged(build("canary_version"), value, rules.label_value(value) and value != "v1")
    alpha = rules.finite_at_least(0, strict=True)(value) and value < 0.5
    judged(build("alpha"), value, alpha)
    judged(build("deferrable"), value, value is None or rules.flag(value))


@HOSTILE
@given(value=ANYTHING)
def test_shadow_check_limits_and_names(value: Any) -> None:
    from airflow_canary.analysis.shadow import PredictionAgreementCheck, PredictionDeltaCheck

    share = rules.finite_at_least(0, strict=True)(value) and value < 1
    judged(lambda v: PredictionAgreementCheck(max_disagreement=v), value, share)
    positive = rules.finite_at_least(0, strict=True)(value)
    if value is None:  # the check's only limit left out
        with pytest.raises(ValueError, match="give max_mean_abs"):
            PredictionDeltaCheck(max_mean_abs=value)
    else:
        judged(lambda v: PredictionDeltaCheck(max_mean_abs=v), value, positive)
    judged(lambda v: PredictionAgreementCheck(name=v), value, rules.check_name(value))


@HOSTILE
@given(value=ANYTHING.filter(lambda v: v is not None))
def test_judge_options_are_finite_numbers(value: Any) -> None:
    # The sequential judge's alpha is in (0, 0.5).
    valid = rules.finite_at_least(0, strict=True)(value) and value < 0.5
    judged(lambda v: _analysis(CanaryHealthSensor, judge_options={"alpha": v}), value, valid)
