"""ShadowPhase: the shadow phase of a rollout, as one value ``canary_rollout(shadow=...)`` takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow_canary.analysis.checks import PredictionDriftCheck
from airflow_canary.analysis.shadow import ShadowCheck, record_format
from airflow_canary.durations import Duration, to_seconds
from airflow_canary.routing import validate_mirror_percent
from airflow_canary.templating import is_template


@dataclass(frozen=True)
class ShadowPhase:
    """Mirror live requests to v2, compare its predictions with v1's, then stop mirroring.

    Runs after ``plan`` and before the header route and the first weight step: mirror on
    (``SetMirrorOperator``), judge (``ShadowAnalysisSensor``), mirror off. A FAIL (or any failed
    task) takes the rollout's rollback path, which removes the mirror.

    :param prediction_log: where both versions' prediction records are, a location URL or a
        list of them (``file://``, ``s3://``, ...; a template is allowed)
    :param checks: shadow checks, at least one: ``PredictionAgreementCheck``,
        ``PredictionDeltaCheck``, ``PredictionDriftCheck`` (on the paired requests),
        ``MirroredErrorRateCheck``, ``MirroredLatencyCheck`` (v2's answers to the mirrored
        requests, from Istio telemetry through the rollout's ``prometheus_conn_id``)
    :param percent: the share of requests mirrored to v2, a number 0..100 (default 100)
    :param duration: how long to judge before a PASS is possible (timedelta or seconds; a
        template is allowed, e.g. ``"{{ params.shadow_duration_seconds }}"``)
    :param poll_interval: seconds between polls; None: the rollout's ``poll_interval``
    :param pairing_window: the largest time between a pair's two records (timedelta or seconds)
    :param log_format: a format from ``airflow_canary.analysis.shadow.FORMATS``
    :param object_storage_conn_id: the Airflow connection with the log store's credentials
    :raises RoutingError: for a percent outside 0..100 (at DAG parse time)
    :raises AnalysisError: for bad checks, locations or format, naming them
    :raises DurationError: for a bad duration, poll interval or window
    """

    prediction_log: str | Sequence[str]
    checks: Sequence[ShadowCheck | PredictionDriftCheck | Mapping[str, Any]]
    percent: float = 100
    duration: Duration = 300
    poll_interval: timedelta | float | None = None
    pairing_window: timedelta | float = 30
    log_format: str = "jsonl"
    object_storage_conn_id: str | None = None

    def __post_init__(self) -> None:
        from airflow_canary.sensors.shadow import _checks, _locations

        if validate_mirror_percent(self.percent) == 0:
            from airflow_canary.routing import RoutingError

            raise RoutingError("shadow phase percent must be above 0: 0 mirrors nothing to judge")
        _checks("shadow", self.checks)
        if not (isinstance(self.prediction_log, str) and is_template(self.prediction_log)):
            _locations("shadow", self.prediction_log)
        if not is_template(self.duration):
            to_seconds("duration", self.duration)
        if self.poll_interval is not None:
            to_seconds("poll_interval", self.poll_interval)
        to_seconds("pairing_window", self.pairing_window)
        record_format(self.log_format)
