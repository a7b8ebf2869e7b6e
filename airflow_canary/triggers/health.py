"""The canary health analysis loop (async), its parameters, and the trigger that runs it deferred."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_canary import durations
from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    CanaryAnalysis,
    Check,
    Query,
    QueryFailure,
    Status,
    check_from_dict,
)
from airflow_canary.durations import Duration, DurationError
from airflow_canary.parameters import flag, mapping, sequence
from airflow_canary.routing.router import (
    ROUTE_OBJECTS,
    route_object_name,
    route_parameter,
    router_kind,
)
from airflow_canary.routing.values import RoutingError, validate_weight
from airflow_canary.target import TrafficTarget
from airflow_canary.triggers.settle import settle
from airflow_canary.triggers.weight_hold import (
    WeightHoldSpec,
    WeightWatch,
    end_step,
    max_polls,
    on_weight_change_reasserts,
)

if TYPE_CHECKING:  # the hooks load when the analysis runs, not when a DAG file is parsed
    from airflow_canary.hooks.istio import AsyncIstioHook
    from airflow_canary.hooks.prometheus import PrometheusHook

log = logging.getLogger(__name__)

#: How long after a poll's scheduled time its queries run, so the scrape that happened just
#: before that time has been ingested (the queries are still evaluated at the scheduled time).
READ_DELAY_SECONDS = 2.0

#: XCom key of the latest poll of a running analysis: the verdict so far with every check's
#: numbers, plus ``at`` and ``started_at``.
PROGRESS_XCOM_KEY = "progress"


def to_seconds(what: str, value: Duration) -> float:
    """A positive number of seconds (see :func:`airflow_canary.durations.to_seconds`).

    :raises AnalysisError: naming ``what`` and the value
    """
    try:
        return durations.to_seconds(what, value)
    except DurationError as err:
        raise AnalysisError(str(err)) from None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class HealthAnalysisConfig:
    """Every parameter of a health analysis, validated once; shared by sensor, branch and trigger.

    ``timeout_seconds`` bounds the whole analysis; ``None`` means
    ``2 × bake_time + 10 × poll_interval``. At the timeout the verdict is INCONCLUSIVE.
    """

    namespace: str
    checks: tuple[Check, ...]
    stable_version: str = "v1"
    canary_version: str = "v2"
    judge: str = "sequential"
    judge_options: Mapping[str, Any] | None = None
    bake_time_seconds: float = 300.0
    poll_interval_seconds: float = 15.0
    max_inconclusive_polls: int = 3
    prometheus_conn_id: str = "prometheus_default"
    timeout_seconds: float | None = None
    rollback: TrafficTarget | None = None
    weight_hold: WeightHoldSpec | None = None
    arms: Arms = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = tuple(check_from_dict(c) if isinstance(c, Mapping) else c for c in self.checks)
        for check in checks:
            if not isinstance(check, Check):
                raise AnalysisError(
                    f"checks must be Check objects (ErrorRateCheck, LatencyCheck, ...) or their "
                    f"to_dict() form, got {check!r}"
                )
        object.__setattr__(self, "checks", checks)
        object.__setattr__(
            self, "arms", Arms(self.namespace, self.stable_version, self.canary_version)
        )
        if self.timeout_seconds is not None:
            to_seconds("timeout", self.timeout_seconds)
        # Building the analysis runs the engine's own validation (judge, limits, times).
        self.build_analysis()

    @classmethod
    def from_params(
        cls,
        *,
        namespace: str,
        checks: Sequence[Check | Mapping[str, Any]],
        stable_version: str = "v1",
        canary_version: str = "v2",
        judge: str = "sequential",
        judge_options: Mapping[str, Any] | None = None,
        bake_time: Duration = 300,
        poll_interval: Duration = 15,
        max_inconclusive_polls: int = 3,
        prometheus_conn_id: str = "prometheus_default",
        timeout: Duration | None = None,
        rollback_on_failure: bool = False,
        virtual_service: str | None = None,
        http_route: str | None = None,
        stable_subset: str = "v1",
        canary_subset: str = "v2",
        route_name: str | Sequence[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        canary_weight: int | str | None = None,
        on_weight_change: str = "end_step",
        router: str = "istio",
        backend_namespace: str | None = None,
    ) -> HealthAnalysisConfig:
        """The operator-facing parameters (timedeltas, rollback flags) -> a config.

        This signature is the one list of the analysis parameters: ``CanaryHealthSensor`` and
        ``BranchCanaryHealthOperator`` declare exactly these (same names, defaults and types,
        keyword-only, a test holds them to it) and build the config through this method from
        their attributes (``CanaryHealthAnalysisMixin.analysis_values``).

        With ``canary_weight`` (the step's weight) every poll checks that the weight holds
        (``triggers.weight_hold``); ``on_weight_change="reassert"`` writes it back instead of
        ending the step.
        """
        checks = sequence(
            "checks", checks, AnalysisError, example="[ErrorRateCheck(max_rate=0.01)]"
        )
        if not checks:
            raise AnalysisError("checks must name at least one check, got an empty list")
        if not isinstance(judge, str):
            raise AnalysisError(
                f"judge must be the name of a judge such as 'sequential', got {judge!r}"
            )
        judge_options = mapping("judge_options", judge_options, AnalysisError)
        flag("rollback_on_failure", rollback_on_failure, AnalysisError)
        route = None
        if virtual_service is not None or http_route is not None:
            try:
                route = route_object_name(
                    router, virtual_service=virtual_service, http_route=http_route
                )
            except RoutingError as err:
                raise AnalysisError(str(err)) from None
        if route is None and (rollback_on_failure or canary_weight is not None):
            needs, verb = (
                ("rollback_on_failure=True", "roll back")
                if rollback_on_failure
                else ("canary_weight", "watch")
            )
            kind = router_kind(router)
            raise AnalysisError(
                f"{needs} needs {route_parameter(kind)}, the name of the "
                f"{ROUTE_OBJECTS[kind].kind} to {verb}"
            )
        rollback = None
        if rollback_on_failure and route is not None:
            rollback = TrafficTarget(
                route=route,
                namespace=namespace,
                stable_subset=stable_subset,
                canary_subset=canary_subset,
                route_name=route_name,
                kubernetes_conn_id=kubernetes_conn_id,
                router=router,
                backend_namespace=backend_namespace,
            )
        weight_hold = None
        if canary_weight is not None and route is not None:
            weight_hold = WeightHoldSpec(
                TrafficTarget(
                    route,
                    namespace,
                    stable_subset,
                    canary_subset,
                    route_name,
                    kubernetes_conn_id,
                    router,
                    backend_namespace,
                ),
                validate_weight(canary_weight),
                reassert=on_weight_change_reasserts(on_weight_change),
            )
        return cls(
            namespace=namespace,
            checks=tuple(checks),  # type: ignore[arg-type]  # dicts are converted in __post_init__
            stable_version=stable_version,
            canary_version=canary_version,
            judge=judge,
            judge_options=judge_options or None,
            bake_time_seconds=to_seconds("bake_time", bake_time),
            poll_interval_seconds=to_seconds("poll_interval", poll_interval),
            max_inconclusive_polls=max_inconclusive_polls,
            prometheus_conn_id=prometheus_conn_id,
            timeout_seconds=None if timeout is None else to_seconds("timeout", timeout),
            rollback=rollback,
            weight_hold=weight_hold,
        )

    @property
    def effective_timeout_seconds(self) -> float:
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        return 2 * self.bake_time_seconds + 10 * self.poll_interval_seconds

    def build_analysis(self) -> CanaryAnalysis:
        return CanaryAnalysis(
            self.arms,
            list(self.checks),
            judge=self.judge,
            bake_time_seconds=self.bake_time_seconds,
            poll_interval_seconds=self.poll_interval_seconds,
            max_inconclusive_polls=self.max_inconclusive_polls,
            judge_options=dict(self.judge_options) if self.judge_options else None,
        )

    def trigger_kwargs(self, started_at: float) -> dict[str, Any]:
        """The trigger's constructor arguments: JSON-able values only."""
        return {
            "namespace": self.namespace,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "checks": [check.to_dict() for check in self.checks],
            "judge": self.judge,
            "judge_options": dict(self.judge_options) if self.judge_options else None,
            "bake_time_seconds": self.bake_time_seconds,
            "poll_interval_seconds": self.poll_interval_seconds,
            "max_inconclusive_polls": self.max_inconclusive_polls,
            "prometheus_conn_id": self.prometheus_conn_id,
            "started_at": started_at,
            "timeout_seconds": self.effective_timeout_seconds,
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "weight_hold": self.weight_hold.to_dict() if self.weight_hold else None,
        }

    def trigger(self, started_at: float | None = None) -> CanaryHealthTrigger:
        return CanaryHealthTrigger(
            **self.trigger_kwargs(time.time() if started_at is None else started_at)
        )


class HealthAnalysisRun:
    """One run of the analysis loop: poll Prometheus, judge, roll back on FAIL, return the verdict."""

    def __init__(
        self,
        config: HealthAnalysisConfig,
        started_at: float,
        *,
        prometheus: PrometheusHook | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | Any = None,
        on_poll: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.started_at = started_at
        if prometheus is None:
            from airflow_canary.hooks.prometheus import PrometheusHook

            prometheus = PrometheusHook(prometheus_conn_id=config.prometheus_conn_id)
        self.prometheus = prometheus
        self.log = logger or log
        self.on_poll = on_poll
        self.watch: WeightWatch | None = None
        if config.weight_hold is not None:
            polls = max_polls(config.effective_timeout_seconds, config.poll_interval_seconds)
            # The share test reads request counts of istio_requests_total, as error checks count
            # them; other checks count other things (feedback, histogram samples).
            counted = tuple(c.name for c in config.checks if c.type_name == "error_rate")
            self.watch = WeightWatch(config.weight_hold, polls, self.log, counted)

    @cached_property
    def istio(self) -> AsyncIstioHook:
        from airflow_canary.hooks.istio import AsyncIstioHook

        assert self.config.rollback is not None
        return AsyncIstioHook(kubernetes_conn_id=self.config.rollback.kubernetes_conn_id)

    def poll_time(self, index: int) -> float:
        """When poll ``index`` reads Prometheus (epoch seconds); poll 0 is the step's baseline."""
        return self.started_at + index * self.config.poll_interval_seconds

    async def run(self) -> dict[str, Any]:
        """Poll until a final verdict or the timeout, then roll back on FAIL.

        Polls are scheduled at ``started_at + k * poll_interval`` and every query is
        evaluated at that instant (Prometheus's ``time`` parameter), read a moment later so
        the last scrape has landed. The analysis is therefore a function of the step's start
        and of Prometheus's data: a run that starts late (a triggerer that restarted and
        rebuilt the trigger from ``serialize()``) first replays the polls it missed, with
        the same baseline and the same evidence, then carries on; the bake time does not
        start again.
        """
        try:
            return await self._run()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Give back this run's shares of the process's shared clients (Prometheus, Kubernetes)."""
        aclose = getattr(self.prometheus, "aclose", None)
        if aclose is not None:
            await aclose()
        if "istio" in self.__dict__:  # built only when a rollback target was read
            await self.istio.aclose()
        if self.watch is not None:
            await self.watch.aclose()

    async def _run(self) -> dict[str, Any]:
        config = self.config
        analysis = config.build_analysis()
        if config.rollback is not None:
            await self.prepare_rollback(config.rollback)
        settle = min(READ_DELAY_SECONDS, config.poll_interval_seconds / 4)
        index = 0
        replayed = 0
        while True:
            at = self.poll_time(index)
            wait = at + settle - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif index > 0 and wait < -config.poll_interval_seconds:
                replayed += 1
            last = await self.poll(analysis, at)
            if last["final"]:
                break
            timed_out = self.timed_out(last, self.poll_time(index + 1))
            if timed_out is not None:
                last = timed_out
                break
            index += 1
        if replayed:
            self.log.info("Caught up with %d overdue poll(s) from Prometheus's history", replayed)
        return await self.conclude(last)

    async def poll(self, analysis: CanaryAnalysis, at: float | None = None) -> dict[str, Any]:
        """One poll at ``at`` (epoch seconds; default now): query Prometheus, feed the judge, check
        that the weight holds, log one line, publish the progress; the verdict so far (a dict)."""
        at = time.time() if at is None else at
        elapsed = at - self.started_at
        samples = await self.sample(analysis.plan(elapsed), at)
        # The statistics run off the event loop: the triggerer serves other triggers.
        verdict = (await asyncio.to_thread(analysis.observe, elapsed, samples)).to_dict()
        self.log.info("%s", poll_line(verdict))
        if self.watch is not None and verdict["verdict"] != Status.FAIL.value:
            ended = await self.watch.poll(elapsed, verdict)
            if ended is not None:  # a step judged on traffic it did not get is never PASS
                verdict = end_step(verdict, ended)
        if self.on_poll is not None:
            try:
                await self.on_poll(
                    {**verdict, "at": _iso(time.time()), "started_at": _iso(self.started_at)}
                )
            except Exception as err:  # progress is for people watching; the analysis goes on
                self.log.warning("Could not publish the analysis progress: %s", err)
        return verdict

    def timed_out(self, last: Mapping[str, Any], next_poll_at: float) -> dict[str, Any] | None:
        """The INCONCLUSIVE verdict when the next poll would come after the timeout, else None."""
        config = self.config
        if next_poll_at <= self.started_at + config.effective_timeout_seconds:
            return None
        return {
            **last,
            "verdict": Status.INCONCLUSIVE.value,
            "final": True,
            "timed_out": True,
            "reason": (
                f"no decision within the {config.effective_timeout_seconds:g}s timeout; "
                f"last poll: {last['reason']}"
            ),
        }

    async def conclude(self, last: Mapping[str, Any]) -> dict[str, Any]:
        """The event of a final verdict: its window and versions, and the rollback on FAIL."""
        config = self.config
        decided_at = time.time()
        event = {
            **last,
            "started_at": _iso(self.started_at),
            "decided_at": _iso_precise(decided_at),
            "elapsed_seconds": round(decided_at - self.started_at, 3),
            "window": {"start": _iso(self.started_at), "end": _iso(decided_at)},
            "namespace": config.namespace,
            "stable_version": config.stable_version,
            "canary_version": config.canary_version,
            "rolled_back_at": None,
            "rollback_seconds": None,
        }
        if self.watch is not None:
            event["weight_corrections"] = self.watch.corrections
        if event["verdict"] == Status.FAIL.value and config.rollback is not None:
            event.update(await self.roll_back(config.rollback, event["reason"], decided_at))
        return event

    async def sample(self, queries: Sequence[Query], at: float | None = None) -> dict[str, Any]:
        """Every planned query's sample, evaluated at ``at`` (epoch seconds; None: now).

        The instant queries of a poll travel in one request and the range queries in one per
        range and step (``PrometheusHook.aquery_many``): a triggerer running a thousand
        analyses sends Prometheus one request per analysis per poll, not one per query.
        """
        end = time.time() if at is None else at
        groups: dict[tuple[float, float] | None, list[Query]] = {}
        for query in queries:
            key = None
            if query.kind == "range":
                assert query.range_seconds is not None and query.step_seconds is not None
                key = (query.range_seconds, query.step_seconds)
            groups.setdefault(key, []).append(query)

        async def ask(key: tuple[float, float] | None, group: list[Query]) -> list[Any]:
            promqls = [query.promql for query in group]
            if key is None:
                return await self.prometheus.aquery_many(promqls, end)
            return await self.prometheus.aquery_range_many(promqls, end - key[0], end, key[1])

        answers = await asyncio.gather(*(ask(key, group) for key, group in groups.items()))
        out: dict[str, Any] = {}
        for group, answer in zip(groups.values(), answers, strict=True):
            for query, outcome in zip(group, answer, strict=True):
                out[query.id] = sample_of(query, outcome)
        return {query.id: out[query.id] for query in queries}

    async def prepare_rollback(self, spec: TrafficTarget) -> None:
        """Read the route object once up front: a missing one is reported now, not at FAIL, and
        the hook has its connection (and Istio's served API version) ready for a fast rollback."""
        try:
            await self.istio.aget_route(spec.traffic_router(), spec.route, spec.namespace)
        except Exception as err:  # the analysis still runs; the rollback will retry and report
            self.log.warning(
                "Rollback target %s/%s is not readable now: %s",
                spec.namespace,
                spec.route,
                err,
            )

    async def roll_back(
        self, spec: TrafficTarget, reason: str, decided_at: float
    ) -> dict[str, Any]:
        """All traffic to stable through the async Istio hook; the verdict records when and how fast."""
        try:
            result = await self.istio.rollback_route(
                spec.traffic_router(),
                spec.route,
                spec.namespace,
                reason=f"canary analysis FAIL: {reason}",
            )
        except Exception as err:  # the verdict must still reach the task, with why rollback failed
            self.log.error("Rollback of %s/%s failed: %s", spec.namespace, spec.route, err)
            return {"rollback_error": f"{type(err).__name__}: {err}"}
        done = time.time()
        self.log.warning(
            "Rolled back %s/%s to 100%% %s in %.3fs",
            spec.namespace,
            spec.route,
            spec.stable_subset,
            done - decided_at,
        )
        return {
            "rolled_back_at": _iso_precise(done),
            "rollback_seconds": round(done - decided_at, 3),
            "rollback": result,
        }


async def run_query(
    prometheus: PrometheusHook, query: Query, at: float | None = None
) -> float | None | list[float] | dict[str, float] | QueryFailure:
    """One planned query's sample, evaluated at ``at`` (epoch seconds; None: now), asked alone."""
    from airflow_canary.hooks.prometheus import PrometheusError

    outcome: Any
    try:
        if query.kind == "range":
            assert query.range_seconds is not None and query.step_seconds is not None
            end = time.time() if at is None else at
            outcome = await prometheus.aquery_range(
                query.promql, end - query.range_seconds, end, query.step_seconds
            )
        else:
            outcome = await prometheus.aquery(query.promql, at)
    except PrometheusError as err:
        outcome = err
    return sample_of(query, outcome)


def sample_of(
    query: Query, outcome: Sequence[Any] | Exception
) -> float | None | list[float] | dict[str, float] | QueryFailure:
    """The analysis's sample from Prometheus's answer to ``query``: its samples (instant and
    vector queries) or series (range queries), or the ``PrometheusError`` it got."""
    from airflow_canary.hooks.prometheus import PrometheusError, scalar_value

    if isinstance(outcome, Exception):
        # bad_data is Prometheus refusing the PromQL itself: no retry or later poll can help
        permanent = getattr(outcome, "error_type", None) == "bad_data"
        return QueryFailure(str(outcome), permanent=permanent)
    if query.kind == "range":
        if len(outcome) > 1:
            return QueryFailure(
                f"range query {query.id!r} returned {len(outcome)} series, expected one: "
                f"{query.promql}"
            )
        return outcome[0].values if outcome else []
    if query.kind == "vector":
        assert query.by is not None
        out: dict[str, float] = {}
        for sample in outcome:
            key = sample.labels.get(query.by)
            if key is not None:
                out[key] = out.get(key, 0.0) + sample.value
        return out
    try:
        return scalar_value(query.promql, outcome)
    except PrometheusError as err:
        return QueryFailure(str(err))


#: Modules the first poll needs that are slow to import: scipy (about half a second), the
#: Prometheus hook, and the async HTTP stack httpx loads on its first request.
WARM_UP_MODULES = (
    "scipy.special",
    "scipy.stats",
    "airflow_canary.hooks.prometheus",
    "anyio._backends._asyncio",
    "anyio.streams.tls",
)


async def warm_up() -> None:
    """Import what the first poll needs in a worker thread, not on the triggerer's loop.

    DAG files import this module, so these are not imported at module load (that would slow
    every DAG parse) but when a step starts, before its first poll.
    """

    def load() -> None:
        for name in WARM_UP_MODULES:
            importlib.import_module(name)

    await asyncio.to_thread(load)


def _iso_precise(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


def poll_line(verdict: Mapping[str, Any]) -> str:
    """One log line per poll: time, requests per arm, each check's values, the decision so far."""
    checks = verdict.get("checks") or []
    canary_requests = max((c.get("canary_requests", 0) for c in checks), default=0)
    stable_requests = max((c.get("stable_requests", 0) for c in checks), default=0)
    parts = [
        f"poll {verdict.get('polls', '?')} t={float(verdict.get('elapsed_seconds', 0)):.0f}s",
        f"requests canary={canary_requests} stable={stable_requests}",
    ]
    for check in checks:
        parts.append(
            f"{check['name']}: canary={_fmt(check.get('canary_value'))} "
            f"stable={_fmt(check.get('stable_value'))} {check['status']}"
        )
    decision = verdict.get("verdict")
    parts.append(f"-> {decision}{' (final)' if verdict.get('final') else ''}")
    return " | ".join(parts)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


class CanaryHealthTrigger(BaseTrigger):
    """Runs the health analysis in the triggerer and fires one event carrying the verdict.

    With ``rollback`` set, a FAIL verdict sends all traffic to stable before the event fires,
    so the rollback does not wait for a worker slot.

    Every value is JSON-able, as the triggerer stores it; the operators build one from a
    validated :class:`HealthAnalysisConfig` (``config.trigger()``).

    :param namespace: namespace of both versions' workloads (Istio's
        ``destination_workload_namespace`` label)
    :param stable_version: ``destination_version`` of the stable model
    :param canary_version: ``destination_version`` of the canary model
    :param checks: the checks in their ``to_dict()`` form, a non-empty list of dicts
    :param judge: judge name (``sequential``, ``mann_whitney``, ``threshold``)
    :param judge_options: the judge's options (e.g. ``{"alpha": 0.05}``), or None
    :param bake_time_seconds: least time before a PASS, seconds (float > 0)
    :param poll_interval_seconds: time between polls, seconds (float > 0)
    :param max_inconclusive_polls: inconclusive polls in a row before INCONCLUSIVE (int >= 1)
    :param prometheus_conn_id: Airflow connection of type ``prometheus``
    :param started_at: start of the analysis, epoch seconds (UTC)
    :param timeout_seconds: bound on the analysis from ``started_at``, seconds; None means
        ``2 × bake_time_seconds + 10 × poll_interval_seconds``
    :param rollback: the traffic target to roll back on FAIL (``TrafficTarget.to_dict()``), or None
    :param weight_hold: the step's weight to hold while judging
        (``WeightHoldSpec.to_dict()``: target, weight 0..100, reassert, alpha), or None
    :param progress_xcom: where to publish each poll (see below), or None

    Parameters that no longer validate (a provider upgrade between deferral and resumption)
    do not raise: the event is an INCONCLUSIVE verdict whose ``reason`` names the problem.

    ``progress_xcom`` (``{"dag_id", "task_id", "run_id", "map_index"}`` of the waiting task)
    makes every poll's verdict-so-far available as that task's XCom ``progress``.

    ``started_at`` (epoch seconds) is the step's start: the baseline readings, the bake time
    and the timeout all count from it. If the triggerer restarts, the trigger is rebuilt from
    ``serialize()`` and replays the polls it missed from Prometheus at their scheduled times,
    so it resumes the same evidence rather than starting over (see ``HealthAnalysisRun.run``).
    """

    def __init__(
        self,
        *,
        namespace: str,
        stable_version: str,
        canary_version: str,
        checks: list[dict[str, Any]],
        judge: str,
        judge_options: dict[str, Any] | None,
        bake_time_seconds: float,
        poll_interval_seconds: float,
        max_inconclusive_polls: int,
        prometheus_conn_id: str,
        started_at: float,
        timeout_seconds: float | None,
        rollback: dict[str, Any] | None,
        weight_hold: dict[str, Any] | None = None,
        progress_xcom: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.progress_xcom = progress_xcom
        self.namespace = namespace
        self.stable_version = stable_version
        self.canary_version = canary_version
        self.checks = checks
        self.judge = judge
        self.judge_options = judge_options
        self.bake_time_seconds = bake_time_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.max_inconclusive_polls = max_inconclusive_polls
        self.prometheus_conn_id = prometheus_conn_id
        self.started_at = started_at
        self.timeout_seconds = timeout_seconds
        self.rollback = rollback
        self.weight_hold = weight_hold

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "namespace": self.namespace,
                "stable_version": self.stable_version,
                "canary_version": self.canary_version,
                "checks": self.checks,
                "judge": self.judge,
                "judge_options": self.judge_options,
                "bake_time_seconds": self.bake_time_seconds,
                "poll_interval_seconds": self.poll_interval_seconds,
                "max_inconclusive_polls": self.max_inconclusive_polls,
                "prometheus_conn_id": self.prometheus_conn_id,
                "started_at": self.started_at,
                "timeout_seconds": self.timeout_seconds,
                "rollback": self.rollback,
                "weight_hold": self.weight_hold,
                "progress_xcom": self.progress_xcom,
            },
        )

    @cached_property
    def config(self) -> HealthAnalysisConfig:
        return HealthAnalysisConfig(
            namespace=self.namespace,
            checks=tuple(self.checks),  # type: ignore[arg-type]  # converted from dicts
            stable_version=self.stable_version,
            canary_version=self.canary_version,
            judge=self.judge,
            judge_options=self.judge_options,
            bake_time_seconds=self.bake_time_seconds,
            poll_interval_seconds=self.poll_interval_seconds,
            max_inconclusive_polls=self.max_inconclusive_polls,
            prometheus_conn_id=self.prometheus_conn_id,
            timeout_seconds=self.timeout_seconds,
            rollback=TrafficTarget.from_dict(self.rollback) if self.rollback else None,
            weight_hold=WeightHoldSpec.from_dict(self.weight_hold) if self.weight_hold else None,
        )

    @cached_property
    def hook(self) -> PrometheusHook:
        from airflow_canary.hooks.prometheus import PrometheusHook

        return PrometheusHook(prometheus_conn_id=self.prometheus_conn_id)

    async def publish_progress(self, progress: dict[str, Any]) -> None:
        """Store the latest poll as the task's XCom ``progress`` (the rollouts page reads it)."""
        from airflow_canary.triggers.task_xcom import push_task_xcom

        await push_task_xcom(self.progress_xcom or {}, PROGRESS_XCOM_KEY, progress)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        began = time.monotonic()
        try:
            await warm_up()  # the hook's and the judge's imports, off the event loop
            verdict = await HealthAnalysisRun(
                self.config,
                self.started_at,
                prometheus=self.hook,
                logger=self.log,
                on_poll=self.publish_progress if self.progress_xcom else None,
            ).run()
        except AnalysisError as err:
            # Parameters were validated at parse time; this only happens across provider upgrades.
            verdict = {
                "verdict": Status.INCONCLUSIVE.value,
                "final": True,
                "judge": self.judge,
                "reason": f"analysis could not run: {err}",
                "checks": [],
                "polls": 0,
                "rolled_back_at": None,
                "error": str(err),
            }
        held = await settle(began)  # a rollback is already done; only the event waits
        if held:
            self.log.info("Verdict held %.1fs for the deferral to settle in the scheduler", held)
        yield TriggerEvent(verdict)
