"""ShadowAnalysisSensor: judge v2's predictions against v1's on mirrored requests, from prediction logs and Istio telemetry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.bases.sensor import poke_mode_only
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_canary.analysis import AnalysisError
from airflow_canary.analysis.checks import PredictionDriftCheck
from airflow_canary.analysis.shadow import (
    SHADOW_CHECK_NAMES,
    MirroredRequestsCheck,
    ShadowCheck,
    ShadowJudge,
    as_shadow_check,
    record_format,
)
from airflow_canary.analysis.values import require_namespace
from airflow_canary.deferral import default_deferrable
from airflow_canary.durations import Duration, literal_seconds, to_seconds
from airflow_canary.names import label_value
from airflow_canary.parameters import optional_flag
from airflow_canary.templating import is_template
from airflow_canary.timestamps import parse_timestamp
from airflow_canary.triggers.shadow import (
    VERDICT_XCOM_KEY,
    ShadowAnalysisConfig,
    ShadowAnalysisRun,
    ShadowLogError,
    ShadowPoll,
)
from airflow_canary.triggers.task_xcom import waiting_task

#: XCom key of what the phase judges (its checks with their limits, duration, window), written
#: when it starts; the health analyses' key, so the rollouts page reads both alike
ANALYSIS_XCOM_KEY = "analysis"
# Airflow's sensor timeout is a backstop past the phase's duration and one poll interval: the
# phase ends in its own verdict at the first poll after the duration (in a worker or in the
# triggerer) unless polls take longer than this margin (a big log on object storage, a busy
# machine).
_TIMEOUT_MARGIN_SECONDS = 120.0


def _checks(task_id: str, checks: object) -> list[ShadowCheck]:
    if isinstance(checks, (str, bytes)) or not isinstance(checks, Sequence) or not checks:
        raise AnalysisError(
            f"task {task_id!r}: checks must be a non-empty list of shadow checks "
            f"({', '.join(SHADOW_CHECK_NAMES)}), got {checks!r}"
        )
    out = []
    for check in checks:
        try:
            out.append(as_shadow_check(check))
        except AnalysisError as err:
            raise AnalysisError(f"task {task_id!r}: {err}") from None
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise AnalysisError(f"task {task_id!r}: check names must be unique, got {names}")
    return out


def _locations(task_id: str, value: object) -> list[str]:
    locations = [value] if isinstance(value, str) else value
    if (
        not isinstance(locations, Sequence)
        or not locations
        or not all(isinstance(v, str) and v.strip() for v in locations)
    ):
        raise AnalysisError(
            f"task {task_id!r}: prediction_log must be a location URL or a non-empty list of "
            f"them (e.g. 'file:///var/log/predictions/', 's3://bucket/shadow/'), got {value!r}"
        )
    return list(locations)


def _telemetry_needs(
    task_id: str,
    checks: Sequence[ShadowCheck],
    namespace: str | None,
    prometheus_conn_id: str | None,
    max_inconclusive_polls: object,
) -> None:
    """Checks on v2's mirrored requests read Istio telemetry: they need Prometheus and the
    namespace of the workloads; AnalysisError naming what is missing."""
    mirrored = [c.name for c in checks if isinstance(c, MirroredRequestsCheck)]
    if (
        isinstance(max_inconclusive_polls, bool)
        or not isinstance(max_inconclusive_polls, int)
        or max_inconclusive_polls < 1
    ):
        raise AnalysisError(
            f"task {task_id!r}: max_inconclusive_polls must be an integer >= 1, "
            f"got {max_inconclusive_polls!r}"
        )
    if not mirrored:
        return
    if not isinstance(prometheus_conn_id, str) or not prometheus_conn_id.strip():
        raise AnalysisError(
            f"task {task_id!r}: check(s) {', '.join(mirrored)} read v2's mirrored requests from "
            f"Istio telemetry in Prometheus: give prometheus_conn_id (e.g. "
            f"'prometheus_default'), got {prometheus_conn_id!r}"
        )
    if not isinstance(namespace, str) or not namespace:
        raise AnalysisError(
            f"task {task_id!r}: check(s) {', '.join(mirrored)} count v2's requests in its "
            f"namespace: give namespace (the workloads' namespace), got {namespace!r}"
        )
    if not is_template(namespace):
        require_namespace(namespace)


def _phase_start(task_id: str, since: object) -> datetime | None:
    """``since`` as a timezone-aware datetime; None for None or ""; AnalysisError otherwise."""
    if since is None or since == "":
        return None
    value = since
    if isinstance(since, str):
        try:
            value = parse_timestamp(since)
        except ValueError:
            value = None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise AnalysisError(
            f"task {task_id!r}: since must be a timezone-aware datetime or ISO 8601 string "
            f"such as '2026-12-01T10:00:00+00:00', got {since!r}"
        )
    return value


def _push(context: Any, key: str, value: Any) -> None:
    ti = context.get("ti") if isinstance(context, Mapping) else None
    if ti is not None:
        ti.xcom_push(key=key, value=value)


@poke_mode_only
class ShadowAnalysisSensor(BaseSensorOperator):
    """Pair v1's and v2's prediction records by request id and judge them; succeed on PASS.

    Every ``poll_interval`` the sensor reads the prediction logs again (through
    ``airflow_canary.hooks.prediction_log``), pairs the records within ``pairing_window`` (records
    from before ``since`` are counted, not paired) and
    asks the shadow judge for a verdict (docs/shadow-analysis.md). FAIL — as early as the
    evidence allows — raises ``AirflowFailException`` with the reason (e.g. ``v2 disagrees with
    v1 on 8.1% of 2,310 paired requests (limit 2%)``); after ``duration`` it PASSes when every
    check has its pairs needed, else raises ``AirflowSensorTimeout`` saying how many pairs were
    missing. A location that does not exist or cannot be read fails the first poll naming it.
    The verdict (with the pairing's counts and example pairs) is pushed under XCom key
    ``verdict`` at every poll and returned on PASS; what is judged (each check with its limits,
    the duration and the pairing window) under ``analysis`` when the task starts.
    ``mode="reschedule"`` is refused: the judge's clock starts with the task. The verdict after
    ``duration`` comes at the first poll that starts after it; Airflow's sensor ``timeout`` is
    ``duration`` plus one ``poll_interval`` plus 120 s, a backstop that fires only when polls
    take longer than about 2 minutes.

    With ``deferrable=True`` (the default follows ``[operators] default_deferrable``) the task
    waits in the triggerer: :class:`~airflow_canary.triggers.shadow.ShadowAnalysisTrigger` runs
    the same poll (``ShadowAnalysisRun``) every ``poll_interval`` and stores each verdict so far
    under ``verdict``; ``execute_complete`` pushes the final one and returns or raises exactly as
    a poke does. A triggerer restart re-reads the logs from ``since`` and keeps the phase's
    start, so the phase is not extended. Without it the task holds a worker slot for the whole
    phase.

    ``MirroredErrorRateCheck`` / ``MirroredLatencyCheck`` read v2's requests reported by its own
    sidecar (``reporter="destination"``: the mirrored copies, as no live request reaches v2 in a
    shadow phase) from Prometheus at every poll, the first poll the baseline; they need
    ``prometheus_conn_id`` and ``namespace``. A poll at which Prometheus fails is INCONCLUSIVE;
    ``max_inconclusive_polls`` of them in a row FAIL the phase.

    :param prediction_log: where both versions' records are, a location URL
        (``ObjectStoragePath``: ``file://``, ``s3://``, ...) or a list of them (templated)
    :param checks: shadow checks (``PredictionAgreementCheck``, ``PredictionDeltaCheck``,
        ``PredictionDriftCheck``, taken as ``PairedPredictionDriftCheck``,
        ``MirroredErrorRateCheck``, ``MirroredLatencyCheck``) or their ``to_dict()`` forms, at
        least one
    :param stable_version: the ``version`` of v1's records (templated)
    :param canary_version: the ``version`` of v2's records (templated)
    :param duration: how long to judge before a PASS is possible, a timedelta or seconds
        (templated)
    :param poll_interval: seconds (or a timedelta) between polls
    :param pairing_window: the largest time between a pair's two records, seconds or timedelta
    :param since: when the mirror went on: records older than this are from before the phase,
        counted and not paired. A timezone-aware datetime or ISO 8601 string (templated; e.g.
        the mirror task's ``mirrored_since``, as ``canary_rollout()`` passes). Empty or None:
        the task's start minus ``pairing_window``.
    :param alpha: the rollout's error budget, in (0, 0.5)
    :param budget_share: the share of ``alpha`` this phase may spend, in (0, 1]
    :param log_format: a format name from ``airflow_canary.analysis.shadow.FORMATS``
    :param object_storage_conn_id: the Airflow connection with the store's credentials, or None
    :param namespace: the workloads' namespace (templated); needed by mirrored-requests checks
    :param prometheus_conn_id: an Airflow connection of type ``prometheus``; needed by
        mirrored-requests checks only
    :param max_inconclusive_polls: failed Prometheus polls in a row that FAIL the phase (>= 1)
    :param deferrable: wait in the triggerer (``ShadowAnalysisTrigger``; default
        ``[operators] default_deferrable``, true when unset); ``False`` polls in the worker
    :raises AnalysisError: at DAG parse time for bad literal values, naming them
    """

    template_fields: Sequence[str] = (
        "prediction_log",
        "stable_version",
        "canary_version",
        "duration",
        "namespace",
        "since",
    )
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        prediction_log: str | Sequence[str],
        checks: Sequence[ShadowCheck | PredictionDriftCheck | Mapping[str, Any]],
        stable_version: str = "v1",
        canary_version: str = "v2",
        duration: Duration = 300,
        poll_interval: Duration = 15,
        pairing_window: Duration = 30,
        alpha: float = 0.01,
        budget_share: float = 1.0,
        log_format: str = "jsonl",
        object_storage_conn_id: str | None = None,
        namespace: str | None = None,
        prometheus_conn_id: str | None = None,
        max_inconclusive_polls: int = 3,
        since: datetime | str | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = str(kwargs.get("task_id", "?"))
        if kwargs.get("mode", "poke") != "poke":
            raise AnalysisError(
                f"task {task_id!r}: mode must be 'poke', got {kwargs['mode']!r}; the shadow "
                "judge's clock starts with the task, so use deferrable=True to free the worker slot"
            )
        self.shadow_checks = _checks(task_id, checks)
        _telemetry_needs(
            task_id, self.shadow_checks, namespace, prometheus_conn_id, max_inconclusive_polls
        )
        self.judge = ShadowJudge(alpha=alpha, budget_share=budget_share)
        record_format(log_format)
        poll = to_seconds("poll_interval", poll_interval)
        window = to_seconds("pairing_window", pairing_window)
        if not is_template(duration):
            to_seconds("duration", duration)
        if not (isinstance(prediction_log, str) and is_template(prediction_log)):
            _locations(task_id, prediction_log)
        for what, value in (("stable_version", stable_version), ("canary_version", canary_version)):
            if not is_template(value):  # the pods' version labels
                label_value(f"task {task_id!r}: {what}", value, AnalysisError)
        if stable_version == canary_version:
            raise AnalysisError(
                f"task {task_id!r}: stable_version and canary_version must differ, both are "
                f"{stable_version!r}"
            )
        deferrable = optional_flag(f"task {task_id!r}: deferrable", deferrable, AnalysisError)
        kwargs.setdefault("poke_interval", poll)
        super().__init__(
            timeout=literal_seconds(duration, 300) + poll + _TIMEOUT_MARGIN_SECONDS, **kwargs
        )
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.prediction_log = prediction_log
        self.stable_version = stable_version
        self.canary_version = canary_version
        self.duration = duration
        self.poll_interval_seconds = poll
        self.pairing_window_seconds = window
        if not (isinstance(since, str) and is_template(since)):
            _phase_start(task_id, since)
        self.since = since
        self.log_format = log_format
        self.object_storage_conn_id = object_storage_conn_id
        self.namespace = namespace
        self.prometheus_conn_id = prometheus_conn_id
        self.max_inconclusive_polls = max_inconclusive_polls
        self._run: ShadowAnalysisRun | None = None
        self._started_at: float | None = None

    def analysis_config(self, now: float) -> ShadowAnalysisConfig:
        """The phase from the rendered parameters; records from before ``since`` (default:
        ``now`` minus the pairing window) are counted, not paired."""
        since = _phase_start(self.task_id, self.since) or datetime.fromtimestamp(
            now - self.pairing_window_seconds, tz=timezone.utc
        )
        try:
            return ShadowAnalysisConfig(
                prediction_log=tuple(_locations(self.task_id, self.prediction_log)),
                checks=tuple(self.shadow_checks),
                stable_version=self.stable_version,
                canary_version=self.canary_version,
                since=since,
                duration_seconds=to_seconds("duration", self.duration),
                poll_interval_seconds=self.poll_interval_seconds,
                pairing_window_seconds=self.pairing_window_seconds,
                alpha=self.judge.alpha,
                budget_share=self.judge.budget_share,
                log_format=self.log_format,
                object_storage_conn_id=self.object_storage_conn_id,
                namespace=self.namespace,
                prometheus_conn_id=self.prometheus_conn_id,
                max_inconclusive_polls=self.max_inconclusive_polls,
            )
        except AnalysisError as err:
            raise AnalysisError(f"task {self.task_id!r}: {err}") from None

    def execute(self, context: Any) -> Any:
        started_at = time.time()
        config = self.analysis_config(started_at)
        self._started_at = started_at
        self._run = None
        self.timeout = (
            config.duration_seconds + config.poll_interval_seconds + _TIMEOUT_MARGIN_SECONDS
        )
        _push(
            context,
            ANALYSIS_XCOM_KEY,
            {
                "phase": "shadow",
                "started_at": datetime.fromtimestamp(started_at, tz=timezone.utc).isoformat(),
                "stable_version": config.stable_version,
                "canary_version": config.canary_version,
                "duration_seconds": config.duration_seconds,
                "pairing_window_seconds": config.pairing_window_seconds,
                "since": config.since.isoformat(),
                "namespace": config.namespace,
                "checks": [check.to_dict() for check in config.checks],
            },
        )
        if self.deferrable:
            trigger = config.trigger(started_at)
            trigger.progress_xcom = waiting_task(context)
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )
        self._run = ShadowAnalysisRun(config, started_at, logger=self.log)
        return super().execute(context)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One poll: read, pair, judge; done on PASS, raises on FAIL or a final INCONCLUSIVE."""
        if self._run is None:  # poke called without execute (e.g. a test)
            self._started_at = time.time()
            self._run = ShadowAnalysisRun(
                self.analysis_config(self._started_at), self._started_at, logger=self.log
            )
        try:
            polled = asyncio.run(self._poll_once(self._run))
        except ShadowLogError as err:
            raise AirflowFailException(str(err)) from err
        _push(context, VERDICT_XCOM_KEY, polled.verdict)
        if not polled.final:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.conclude(polled.verdict))

    @staticmethod
    async def _poll_once(run: ShadowAnalysisRun) -> ShadowPoll:
        try:
            return await run.poll()
        finally:
            # Each poke runs its own event loop: close this loop's clients now.
            await run.aclose()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger's event: push the verdict under XCom ``verdict`` and
        conclude as a poke would; AirflowFailException naming a log that cannot be read."""
        if event.get("error"):
            raise AirflowFailException(event["error"])
        verdict = event["verdict"]
        if event.get("problems"):
            self.log.warning("Prediction log rows not used: %s", event["problems"])
        _push(context, VERDICT_XCOM_KEY, verdict)
        self.log.info("Shadow analysis %s: %s", verdict["verdict"], verdict["reason"])
        return self.conclude(verdict)

    def conclude(self, verdict: Mapping[str, Any]) -> dict[str, Any]:
        """The final verdict: returned on PASS; the example pairs logged, then
        AirflowFailException on FAIL and AirflowSensorTimeout on INCONCLUSIVE."""
        status = verdict["verdict"]
        message = f"shadow analysis {status}: {verdict['reason']}"
        if status == "PASS":
            return dict(verdict)
        for example in verdict.get("examples") or []:
            self.log.error(
                "%s: request %s: v1 %s, v2 %s",
                example["check"],
                example["request_id"],
                example["stable"]["prediction"],
                example["canary"]["prediction"],
            )
        if status == "FAIL":
            raise AirflowFailException(message)
        raise AirflowSensorTimeout(message)
