"""ShadowAnalysisSensor: judge v2's predictions against v1's on mirrored requests, from prediction logs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.bases.sensor import poke_mode_only
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_canary.analysis import AnalysisError
from airflow_canary.analysis.shadow import (
    ReadResult,
    ShadowCheck,
    ShadowJudge,
    pair_records,
    record_format,
    shadow_check_from_dict,
)
from airflow_canary.durations import Duration, literal_seconds, to_seconds
from airflow_canary.names import label_value
from airflow_canary.templating import is_template

#: XCom key of what the phase judges (its checks with their limits, duration, window), written
#: when it starts; the health analyses' key, so the rollouts page reads both alike
ANALYSIS_XCOM_KEY = "analysis"
#: XCom key of the latest verdict (the health analyses' key, so rollback reasons and reports read
#: it alike), pushed at every poll and before the task returns or raises.
VERDICT_XCOM_KEY = "verdict"


def _checks(task_id: str, checks: object) -> list[ShadowCheck]:
    if isinstance(checks, (str, bytes)) or not isinstance(checks, Sequence) or not checks:
        raise AnalysisError(
            f"task {task_id!r}: checks must be a non-empty list of shadow checks "
            f"(PredictionAgreementCheck, PredictionDeltaCheck), got {checks!r}"
        )
    out = []
    for check in checks:
        if isinstance(check, ShadowCheck):
            out.append(check)
        elif isinstance(check, Mapping):
            out.append(shadow_check_from_dict(check))
        else:
            raise AnalysisError(
                f"task {task_id!r}: {check!r} is not a shadow check; use "
                "PredictionAgreementCheck or PredictionDeltaCheck"
            )
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


@poke_mode_only
class ShadowAnalysisSensor(BaseSensorOperator):
    """Pair v1's and v2's prediction records by request id and judge them; succeed on PASS.

    Every ``poll_interval`` the sensor reads the prediction logs again (through
    ``airflow_canary.hooks.prediction_log``), pairs the records within ``pairing_window`` (records
    older than the task's start minus that window are counted, not paired) and
    asks the shadow judge for a verdict (docs/shadow-analysis.md). FAIL — as early as the
    evidence allows — raises ``AirflowFailException`` with the reason (e.g. ``v2 disagrees with
    v1 on 8.1% of 2,310 paired requests (limit 2%)``); after ``duration`` it PASSes when every
    check has its pairs needed, else raises ``AirflowSensorTimeout`` saying how many pairs were
    missing. A location that does not exist or cannot be read fails the first poll naming it.
    The verdict (with the pairing's counts and example pairs) is pushed under XCom key
    ``verdict`` at every poll and returned on PASS; what is judged (each check with its limits,
    the duration and the pairing window) under ``analysis`` when the task starts. ``mode="reschedule"`` is refused:
    the judge's clock starts with the task.

    :param prediction_log: where both versions' records are, a location URL
        (``ObjectStoragePath``: ``file://``, ``s3://``, ...) or a list of them (templated)
    :param checks: ``PredictionAgreementCheck`` / ``PredictionDeltaCheck`` instances or their
        ``to_dict()`` forms, at least one
    :param stable_version: the ``version`` of v1's records (templated)
    :param canary_version: the ``version`` of v2's records (templated)
    :param duration: how long to judge before a PASS is possible, a timedelta or seconds
        (templated)
    :param poll_interval: seconds (or a timedelta) between polls
    :param pairing_window: the largest time between a pair's two records, seconds or timedelta
    :param alpha: the rollout's error budget, in (0, 0.5)
    :param budget_share: the share of ``alpha`` this phase may spend, in (0, 1]
    :param log_format: a format name from ``airflow_canary.analysis.shadow.FORMATS``
    :param object_storage_conn_id: the Airflow connection with the store's credentials, or None
    :raises AnalysisError: at DAG parse time for bad literal values, naming them
    """

    template_fields: Sequence[str] = (
        "prediction_log",
        "stable_version",
        "canary_version",
        "duration",
    )
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        prediction_log: str | Sequence[str],
        checks: Sequence[ShadowCheck | Mapping[str, Any]],
        stable_version: str = "v1",
        canary_version: str = "v2",
        duration: Duration = 300,
        poll_interval: Duration = 15,
        pairing_window: Duration = 30,
        alpha: float = 0.01,
        budget_share: float = 1.0,
        log_format: str = "jsonl",
        object_storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = str(kwargs.get("task_id", "?"))
        if kwargs.get("mode", "poke") != "poke":
            raise AnalysisError(
                f"task {task_id!r}: mode must be 'poke', got {kwargs['mode']!r}; the shadow "
                "judge's clock starts with the task"
            )
        self.shadow_checks = _checks(task_id, checks)
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
        kwargs.setdefault("poke_interval", poll)
        margin = literal_seconds(duration, 300) + 3 * poll
        super().__init__(timeout=margin, **kwargs)
        self.prediction_log = prediction_log
        self.stable_version = stable_version
        self.canary_version = canary_version
        self.duration = duration
        self.pairing_window_seconds = window
        self.log_format = log_format
        self.object_storage_conn_id = object_storage_conn_id
        self._started_at: float | None = None
        self._since: datetime | None = None
        self._polls = 0
        self._reset_logs()

    def _reset_logs(self) -> None:
        """Forget what was read: the next poll reads every log from its start."""
        from airflow_canary.hooks.prediction_log import LogCursor

        # The first poll skips, unparsed, what a log held long before the phase.
        self._cursor = LogCursor(skip_before=self._since)
        self._logs = ReadResult(sources=[])
        self._before_phase = 0

    def execute(self, context: Any) -> Any:
        self._started_at = time.monotonic()
        # Records from before the phase (a log kept across rollouts) are counted, not paired.
        self._since = datetime.now(timezone.utc) - timedelta(seconds=self.pairing_window_seconds)
        self._polls = 0
        self._reset_logs()
        duration = to_seconds("duration", self.duration)
        self.timeout = duration + 3 * float(self.poke_interval)
        context["ti"].xcom_push(
            key=ANALYSIS_XCOM_KEY,
            value={
                "phase": "shadow",
                "started_at": datetime.now(timezone.utc).isoformat(),
                "stable_version": self.stable_version,
                "canary_version": self.canary_version,
                "duration_seconds": duration,
                "pairing_window_seconds": self.pairing_window_seconds,
                "checks": [check.to_dict() for check in self.shadow_checks],
            },
        )
        return super().execute(context)

    def read(self) -> ReadResult:
        """Every record of the phase so far; AirflowFailException naming a location that cannot
        be read. Each poll reads only what was appended since the last one; records from before
        the phase are counted (``before_phase`` of the pairing), not kept."""
        from airflow_canary.hooks.prediction_log import PredictionLogError, read_prediction_log

        for location in _locations(self.task_id, self.prediction_log):
            try:
                new = read_prediction_log(
                    location,
                    conn_id=self.object_storage_conn_id,
                    format=self.log_format,
                    cursor=self._cursor,
                )
            except PredictionLogError as err:
                raise AirflowFailException(f"shadow analysis cannot read its logs: {err}") from err
            if self._since is not None:
                kept = [record for record in new.records if record.time >= self._since]
                dropped = len(new.records) - len(kept)
                new.records, new.rows = kept, new.rows - dropped
                self._before_phase += dropped
            self._logs.extend(new)
        return self._logs

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One poll: read, pair, judge; done on PASS, raises on FAIL or a final INCONCLUSIVE."""
        started = self._started_at if self._started_at is not None else time.monotonic()
        self._started_at = started
        self._polls += 1
        logs = self.read()
        problems = logs.describe_problems()
        if problems:
            self.log.warning("Prediction log rows not used: %s", problems)
        pairing = pair_records(
            logs.records,
            stable_version=self.stable_version,
            canary_version=self.canary_version,
            window_seconds=self.pairing_window_seconds,
            since=self._since,
        )
        pairing = dataclasses.replace(
            pairing, before_phase=pairing.before_phase + self._before_phase + self._cursor.skipped
        )
        outcome = self.judge.judge(
            pairing,
            self.shadow_checks,
            elapsed_seconds=time.monotonic() - started,
            duration_seconds=to_seconds("duration", self.duration),
            polls=self._polls,
        )
        verdict = {**outcome.to_dict(), "logs": logs.to_dict()}
        context["ti"].xcom_push(key=VERDICT_XCOM_KEY, value=verdict)
        self.log.info("Shadow analysis %s: %s", verdict["verdict"], outcome.verdict.reason)
        if not outcome.verdict.final:
            return False
        status = verdict["verdict"]
        message = f"shadow analysis {status}: {outcome.verdict.reason}"
        if status == "PASS":
            return PokeReturnValue(is_done=True, xcom_value=verdict)
        for example in outcome.examples:
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
