"""The shadow analysis loop (async), its parameters, and the trigger that runs it deferred.

One poll reads what the prediction logs gained (``airflow_canary.hooks.prediction_log``, in a
thread: object storage is blocking I/O), pairs the phase's records (``pair_records``), reads v2's
mirrored requests from Prometheus when a check counts them (``MirroredTelemetry``, the poll's
instant queries in one request) and asks the ``ShadowJudge``. ``ShadowAnalysisSensor`` runs one
poll per poke in the worker; ``ShadowAnalysisTrigger`` runs the loop in the triggerer. The
statistics live in ``airflow_canary.analysis.shadow``; this module only feeds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_canary.analysis import AnalysisError
from airflow_canary.analysis.shadow import (
    MirroredRequestsCheck,
    MirroredTelemetry,
    ReadResult,
    ShadowCheck,
    ShadowJudge,
    ShadowVerdict,
    TelemetryPoll,
    as_shadow_check,
    pair_records,
    record_format,
)
from airflow_canary.analysis.values import Arms, Query
from airflow_canary.timestamps import parse_timestamp
from airflow_canary.triggers.health import READ_DELAY_SECONDS, sample_of, warm_up
from airflow_canary.triggers.settle import settle

if TYPE_CHECKING:  # the hooks load when the analysis runs, not when a DAG file is parsed
    from airflow_canary.hooks.prediction_log import LogCursor
    from airflow_canary.hooks.prometheus import PrometheusHook

log = logging.getLogger(__name__)

#: XCom key of the verdict (so far, at every poll; final before the task returns or raises).
VERDICT_XCOM_KEY = "verdict"


class ShadowLogError(Exception):
    """A prediction log location that cannot be read: the phase fails, the message names it."""


@dataclass(frozen=True)
class ShadowAnalysisConfig:
    """Every parameter of one shadow phase, rendered and validated; shared by sensor and trigger.

    :param prediction_log: the log locations (``ObjectStoragePath`` URLs), at least one
    :param checks: shadow checks or their ``to_dict()`` forms (converted), at least one
    :param since: the phase's start for the records (timezone-aware, or ISO 8601 text):
        older records are counted as from before the phase, not paired
    :param duration_seconds: how long to judge before a PASS is possible, seconds
    :param poll_interval_seconds: seconds between polls
    :param pairing_window_seconds: the largest time between a pair's two records, seconds
    :raises AnalysisError: naming a bad value
    """

    prediction_log: tuple[str, ...]
    checks: tuple[ShadowCheck, ...]
    stable_version: str
    canary_version: str
    since: datetime
    duration_seconds: float
    poll_interval_seconds: float
    pairing_window_seconds: float
    alpha: float = 0.01
    budget_share: float = 1.0
    log_format: str = "jsonl"
    object_storage_conn_id: str | None = None
    namespace: str | None = None
    prometheus_conn_id: str | None = None
    max_inconclusive_polls: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.prediction_log, str) or not self.prediction_log:
            raise AnalysisError(
                f"prediction_log must be a non-empty list of locations, got {self.prediction_log!r}"
            )
        object.__setattr__(self, "prediction_log", tuple(self.prediction_log))
        checks = tuple(as_shadow_check(check) for check in self.checks)
        if not checks:
            raise AnalysisError("the shadow phase needs at least one check, got none")
        object.__setattr__(self, "checks", checks)
        since = parse_timestamp(self.since) if isinstance(self.since, str) else self.since
        if not isinstance(since, datetime) or since.utcoffset() is None:
            raise AnalysisError(f"since must be a timezone-aware time, got {self.since!r}")
        object.__setattr__(self, "since", since)
        for what in ("duration_seconds", "poll_interval_seconds", "pairing_window_seconds"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise AnalysisError(f"{what} must be a positive number, got {value!r}")
        record_format(self.log_format)
        ShadowJudge(alpha=self.alpha, budget_share=self.budget_share)
        if self.mirrored and not (self.namespace and self.prometheus_conn_id):
            raise AnalysisError(
                "mirrored-requests checks need namespace and prometheus_conn_id, got "
                f"{self.namespace!r} and {self.prometheus_conn_id!r}"
            )

    @property
    def mirrored(self) -> bool:
        """Whether a check counts v2's mirrored requests in Istio telemetry."""
        return any(isinstance(check, MirroredRequestsCheck) for check in self.checks)

    def trigger_kwargs(self, started_at: float) -> dict[str, Any]:
        """The trigger's constructor arguments: every field, as JSON-able values."""
        kwargs: dict[str, Any] = {
            field.name: getattr(self, field.name) for field in dataclasses.fields(self)
        }
        kwargs["prediction_log"] = list(self.prediction_log)
        kwargs["checks"] = [check.to_dict() for check in self.checks]
        kwargs["since"] = self.since.isoformat()
        return {**kwargs, "started_at": started_at}

    def trigger(self, started_at: float) -> ShadowAnalysisTrigger:
        return ShadowAnalysisTrigger(**self.trigger_kwargs(started_at))


@dataclass(frozen=True)
class ShadowPoll:
    """One poll's outcome: the verdict dict (as pushed to XCom ``verdict``), the judge's
    verdict behind it, and the log rows that were not records, described (empty if none)."""

    verdict: dict[str, Any]
    outcome: ShadowVerdict
    problems: str

    @property
    def final(self) -> bool:
        return self.outcome.verdict.final


class ShadowAnalysisRun:
    """The state of one shadow phase between polls: how far each log was read, the records of
    the phase so far, the mirrored-requests counters and the poll count.

    ``started_at`` (epoch seconds) is the phase's start: the duration counts from it, and so
    does the poll schedule of :meth:`run`.
    """

    def __init__(
        self,
        config: ShadowAnalysisConfig,
        started_at: float,
        *,
        prometheus: PrometheusHook | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | Any = None,
        on_poll: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        from airflow_canary.hooks.prediction_log import LogCursor

        self.config = config
        self.started_at = started_at
        self.log = logger or log
        self.on_poll = on_poll
        self.judge = ShadowJudge(alpha=config.alpha, budget_share=config.budget_share)
        # The first read skips, unparsed, what a log held long before the phase.
        self.cursor: LogCursor = LogCursor(skip_before=config.since)
        self.logs = ReadResult(sources=[])
        self.before_phase = 0
        self.polls = 0
        self.telemetry: MirroredTelemetry | None = None
        if config.mirrored:
            arms = Arms(str(config.namespace), config.stable_version, config.canary_version)
            self.telemetry = MirroredTelemetry(arms, config.checks, config.max_inconclusive_polls)
        if prometheus is not None:
            self.__dict__["prometheus"] = prometheus

    @cached_property
    def prometheus(self) -> PrometheusHook:
        from airflow_canary.hooks.prometheus import PrometheusHook

        return PrometheusHook(prometheus_conn_id=str(self.config.prometheus_conn_id))

    async def aclose(self) -> None:
        """Give back this run's share of the process's Prometheus client (if it made one)."""
        if "prometheus" in self.__dict__:
            aclose = getattr(self.prometheus, "aclose", None)
            if aclose is not None:
                await aclose()

    def read(self) -> ReadResult:
        """Every record of the phase so far (blocking I/O: run it in a thread from a loop).

        Each read returns only what was appended since the last one; records from before the
        phase are counted (``before_phase`` of the pairing), not kept.

        :raises ShadowLogError: naming a location that does not exist or cannot be read
        """
        from airflow_canary.hooks.prediction_log import PredictionLogError, read_prediction_log

        config = self.config
        for location in config.prediction_log:
            try:
                new = read_prediction_log(
                    location,
                    conn_id=config.object_storage_conn_id,
                    format=config.log_format,
                    cursor=self.cursor,
                )
            except PredictionLogError as err:
                raise ShadowLogError(f"shadow analysis cannot read its logs: {err}") from err
            kept = [record for record in new.records if record.time >= config.since]
            dropped = len(new.records) - len(kept)
            new.records, new.rows = kept, new.rows - dropped
            self.before_phase += dropped
            self.logs.extend(new)
        return self.logs

    async def observe_telemetry(self, at: float) -> TelemetryPoll | None:
        """Read the mirrored-requests counters from Prometheus, all evaluated at ``at`` (epoch
        seconds) in one request; None when no check reads them. A query Prometheus failed or
        rejected is a ``QueryFailure`` (``MirroredTelemetry.observe`` counts it)."""
        if self.telemetry is None:
            return None
        queries = [Query(qid, promql) for qid, promql in self.telemetry.queries().items()]
        answers = await self.prometheus.aquery_many([q.promql for q in queries], at)
        samples = {
            query.id: sample_of(query, answer)
            for query, answer in zip(queries, answers, strict=True)
        }
        return self.telemetry.observe(samples)  # type: ignore[arg-type]  # instant: numbers

    async def poll(self, at: float | None = None) -> ShadowPoll:
        """One poll at ``at`` (epoch seconds; default now): read, pair, read Prometheus, judge,
        log one line, publish the verdict so far.

        :raises ShadowLogError: naming a location that cannot be read
        """
        at = time.time() if at is None else at
        self.polls += 1
        logs = await asyncio.to_thread(self.read)
        problems = logs.describe_problems()
        if problems:
            self.log.warning("Prediction log rows not used: %s", problems)
        telemetry = await self.observe_telemetry(at)
        # Pairing and the e-values run off the event loop: the triggerer serves other triggers.
        outcome = await asyncio.to_thread(self._judge, logs, at - self.started_at, telemetry)
        verdict = {**outcome.to_dict(), "logs": logs.to_dict()}
        self.log.info("Shadow analysis %s: %s", verdict["verdict"], outcome.verdict.reason)
        if self.on_poll is not None:
            try:
                await self.on_poll(verdict)
            except Exception as err:  # progress is for people watching; the analysis goes on
                self.log.warning("Could not publish the shadow analysis's progress: %s", err)
        return ShadowPoll(verdict, outcome, problems)

    def _judge(
        self, logs: ReadResult, elapsed: float, telemetry: TelemetryPoll | None
    ) -> ShadowVerdict:
        config = self.config
        pairing = pair_records(
            logs.records,
            stable_version=config.stable_version,
            canary_version=config.canary_version,
            window_seconds=config.pairing_window_seconds,
            since=config.since,
        )
        pairing = dataclasses.replace(
            pairing,
            before_phase=pairing.before_phase + self.before_phase + self.cursor.skipped,
        )
        return self.judge.judge(
            pairing,
            config.checks,
            elapsed_seconds=elapsed,
            duration_seconds=config.duration_seconds,
            polls=self.polls,
            telemetry=telemetry,
        )

    def poll_time(self, index: int) -> float:
        """When poll ``index`` is due (epoch seconds); poll 0 at the phase's start."""
        return self.started_at + index * self.config.poll_interval_seconds

    async def run(self) -> ShadowPoll:
        """Poll until a final verdict (the judge gives one at the first poll after the duration).

        Polls are due at ``started_at + k * poll_interval``; Prometheus's counters are evaluated
        at that instant, read a moment later so the last scrape has landed. A run that starts
        late (a triggerer that restarted and rebuilt the trigger from ``serialize()``) reads
        every log again from ``since``, reads the counters at each poll it missed (the baseline
        stays the phase's first poll), and judges once it has caught up: the duration still
        counts from ``started_at``, so the phase does not get longer.

        :raises ShadowLogError: naming a location that cannot be read
        """
        try:
            interval = self.config.poll_interval_seconds
            delay = min(READ_DELAY_SECONDS, interval / 4)
            index = 0
            while True:
                at = self.poll_time(index)
                wait = at + delay - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                due = max(index, int((time.time() - delay - self.started_at) // interval))
                if due > index:  # a late start (or a slow poll): later polls are due already
                    await self.catch_up(index, due)
                    index = due
                    at = self.poll_time(index)
                polled = await self.poll(at)
                if polled.final:
                    return polled
                index += 1
        finally:
            await self.aclose()

    async def catch_up(self, first: int, due: int) -> None:
        """Count polls ``first`` .. ``due - 1`` as done; with mirrored-requests checks, read the
        counters at each of their instants (a restart in between is seen as a restart, the
        baseline stays the phase's first poll) until Prometheus has failed too often."""
        self.log.info("Catching up with %d overdue poll(s) of the shadow phase", due - first)
        for index in range(first, due):
            self.polls += 1
            if self.telemetry is not None:
                reading = await self.observe_telemetry(self.poll_time(index))
                if reading is not None and (reading.exhausted or reading.rejected):
                    self.polls += due - index - 1
                    return


class ShadowAnalysisTrigger(BaseTrigger):
    """Runs a shadow phase in the triggerer and fires one event with its outcome.

    Every value is JSON-able, as the triggerer stores it; ``ShadowAnalysisSensor`` builds one
    from a rendered, validated :class:`ShadowAnalysisConfig` (``config.trigger(started_at)``).

    :param prediction_log: the log locations, a non-empty list of ``ObjectStoragePath`` URLs
    :param checks: the shadow checks in their ``to_dict()`` form, a non-empty list of dicts
    :param stable_version: the ``version`` of v1's records
    :param canary_version: the ``version`` of v2's records
    :param since: ISO 8601 time with an offset: records older than it are from before the phase
    :param duration_seconds: how long to judge before a PASS is possible, seconds (> 0)
    :param poll_interval_seconds: seconds between polls (> 0)
    :param pairing_window_seconds: the largest time between a pair's two records, seconds (> 0)
    :param alpha: the rollout's error budget, in (0, 0.5)
    :param budget_share: the share of ``alpha`` this phase may spend, in (0, 1]
    :param log_format: a format name from ``airflow_canary.analysis.shadow.FORMATS``
    :param object_storage_conn_id: the Airflow connection with the store's credentials, or None
    :param namespace: the workloads' namespace (mirrored-requests checks), or None
    :param prometheus_conn_id: an Airflow connection of type ``prometheus`` (mirrored-requests
        checks), or None
    :param max_inconclusive_polls: failed Prometheus polls in a row that FAIL the phase (>= 1)
    :param started_at: the phase's start, epoch seconds (UTC): the duration counts from it
    :param progress_xcom: ``{"dag_id", "task_id", "run_id", "map_index"}`` of the waiting task:
        every poll's verdict so far is stored as its XCom ``verdict`` (the rollouts page shows
        it live); None: not stored

    The event is ``{"verdict": <verdict dict>, "problems": <log rows not used, described>}``
    with the final verdict (PASS, FAIL, or INCONCLUSIVE at the duration's end), or
    ``{"error": <message>}`` when a log location cannot be read (the message names it) or the
    parameters no longer validate (a provider upgrade between deferral and resumption).

    If the triggerer restarts, the trigger is rebuilt from ``serialize()`` and the loop starts
    again from these parameters: it re-reads the logs from ``since`` and keeps ``started_at``,
    so the phase does not get longer (``ShadowAnalysisRun.run``).
    """

    def __init__(
        self,
        *,
        prediction_log: list[str],
        checks: list[dict[str, Any]],
        stable_version: str,
        canary_version: str,
        since: str,
        duration_seconds: float,
        poll_interval_seconds: float,
        pairing_window_seconds: float,
        alpha: float,
        budget_share: float,
        log_format: str,
        object_storage_conn_id: str | None,
        namespace: str | None,
        prometheus_conn_id: str | None,
        max_inconclusive_polls: int,
        started_at: float,
        progress_xcom: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.prediction_log = prediction_log
        self.checks = checks
        self.stable_version = stable_version
        self.canary_version = canary_version
        self.since = since
        self.duration_seconds = duration_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.pairing_window_seconds = pairing_window_seconds
        self.alpha = alpha
        self.budget_share = budget_share
        self.log_format = log_format
        self.object_storage_conn_id = object_storage_conn_id
        self.namespace = namespace
        self.prometheus_conn_id = prometheus_conn_id
        self.max_inconclusive_polls = max_inconclusive_polls
        self.started_at = started_at
        self.progress_xcom = progress_xcom

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_log": self.prediction_log,
                "checks": self.checks,
                "stable_version": self.stable_version,
                "canary_version": self.canary_version,
                "since": self.since,
                "duration_seconds": self.duration_seconds,
                "poll_interval_seconds": self.poll_interval_seconds,
                "pairing_window_seconds": self.pairing_window_seconds,
                "alpha": self.alpha,
                "budget_share": self.budget_share,
                "log_format": self.log_format,
                "object_storage_conn_id": self.object_storage_conn_id,
                "namespace": self.namespace,
                "prometheus_conn_id": self.prometheus_conn_id,
                "max_inconclusive_polls": self.max_inconclusive_polls,
                "started_at": self.started_at,
                "progress_xcom": self.progress_xcom,
            },
        )

    @cached_property
    def config(self) -> ShadowAnalysisConfig:
        """The phase from these parameters (checks and ``since`` converted back)."""
        return ShadowAnalysisConfig(
            **{
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(ShadowAnalysisConfig)
            }
        )

    async def publish_progress(self, verdict: dict[str, Any]) -> None:
        """Store the verdict so far as the task's XCom ``verdict``, as the sensor does at every
        poke (the rollouts page shows a verdict that is not final as the phase's live numbers)."""
        from airflow_canary.triggers.task_xcom import push_task_xcom

        await push_task_xcom(self.progress_xcom or {}, VERDICT_XCOM_KEY, verdict)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        began = time.monotonic()
        event: dict[str, Any]
        try:
            await warm_up()  # the judge's and the hook's imports, off the event loop
            polled = await ShadowAnalysisRun(
                self.config,
                self.started_at,
                logger=self.log,
                on_poll=self.publish_progress if self.progress_xcom else None,
            ).run()
            event = {"verdict": polled.verdict, "problems": polled.problems}
        except ShadowLogError as err:
            event = {"error": str(err)}
        except (AnalysisError, ValueError) as err:
            # Validated at parse time; this only happens across provider upgrades.
            event = {"error": f"shadow analysis could not run: {err}"}
        await settle(began)  # an early outcome waits for the deferral to settle (settle.py)
        yield TriggerEvent(event)


__all__ = [
    "VERDICT_XCOM_KEY",
    "ShadowAnalysisConfig",
    "ShadowAnalysisRun",
    "ShadowAnalysisTrigger",
    "ShadowLogError",
    "ShadowPoll",
]
