"""The stateful, pure poll loop a trigger drives: plan queries, observe samples, decide."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow_canary.analysis.checks import Check, require_serializable
from airflow_canary.analysis.checks import role as arm_role
from airflow_canary.analysis.judges import make_judge
from airflow_canary.analysis.judges.base import Classification
from airflow_canary.analysis.observations import (
    ArmObservation,
    Counts,
    Observation,
    advance_buckets,
    advance_counters,
    clean_number,
    clean_series,
    clean_value,
    parse_le,
)
from airflow_canary.analysis.values import (
    AnalysisError,
    Arm,
    Arms,
    Query,
    QueryFailure,
    Status,
    query_failures,
    require_max_inconclusive_polls,
)
from airflow_canary.analysis.verdict import Verdict

STATE_FORMAT = 1


def _duration_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _query_id(check: Check, role: str) -> str:
    return f"{check.name}/{role}"


#: a query that reads 0, not nothing, when its series are absent: ``(sum(...) or vector(0))``
_ZERO_FALLBACK = re.compile(r"\bor\s+vector\(\s*0\s*\)[\s)]*$")


class CanaryAnalysis:
    """Compare canary with stable, poll after poll, until a judge decides.

    The driver calls ``plan(elapsed)``, runs the queries, and hands the samples to
    ``observe(elapsed, samples)``. The first successful poll reads every cumulative counter
    as the baseline of the step; later polls measure increases from it. ``state()`` is plain
    JSON, so a deferred trigger can resume the analysis in another process.
    """

    def __init__(
        self,
        arms: Arms,
        checks: Sequence[Check],
        judge: str = "sequential",
        bake_time_seconds: float = 300,
        poll_interval_seconds: float = 15,
        max_inconclusive_polls: int = 3,
        judge_options: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(arms, Arms):
            raise AnalysisError(f"arms must be an Arms value, got {arms!r}")
        for what, value in (
            ("bake_time_seconds", bake_time_seconds),
            ("poll_interval_seconds", poll_interval_seconds),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise AnalysisError(f"{what} must be a positive number of seconds, got {value!r}")
        if bake_time_seconds < poll_interval_seconds:
            raise AnalysisError(
                f"bake_time_seconds ({bake_time_seconds:g}) must be at least poll_interval_seconds "
                f"({poll_interval_seconds:g}), or no poll would ever see the end of the bake"
            )
        require_max_inconclusive_polls(max_inconclusive_polls)
        checks = list(checks)
        if not checks:
            raise AnalysisError(
                "checks must name at least one check, e.g. ErrorRateCheck(max_rate=0.01)"
            )
        names: set[str] = set()
        for check in checks:
            if not isinstance(check, Check):
                raise AnalysisError(f"checks must be Check values, got {check!r}")
            if check.name in names:
                raise AnalysisError(
                    f"duplicate check name {check.name!r}; give each check its own name"
                )
            names.add(check.name)
            require_serializable(check)
        options = dict(judge_options or {})
        self.judge = make_judge(judge, **options)
        self.judge.validate(checks)
        self.arms = arms
        self.checks = tuple(checks)
        self.bake_time_seconds = float(bake_time_seconds)
        self.poll_interval_seconds = float(poll_interval_seconds)
        self.max_inconclusive_polls = max_inconclusive_polls
        self._state = self._load_state(state)

    # -- state -------------------------------------------------------------------------

    def judged_as(self) -> list[str]:
        """One sentence per check saying how the judge decides it (counts at every poll, or a
        value once at the end of the bake), for task docs shown at DAG parse time."""
        return [self.judge.judged_as(check) for check in self.checks]

    def _load_state(self, state: dict[str, Any] | None) -> dict[str, Any]:
        if state is None:
            return {
                "format": STATE_FORMAT,
                "judge": self.judge.name,
                "judge_options": self.judge.options(),
                "polls": 0,
                "failed_polls": 0,
                "start": None,
                "counters": {},
                "history": [],
                "judge_state": {check.name: {} for check in self.checks},
                "final": None,
            }
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise AnalysisError(
                f"state must be a dict from CanaryAnalysis.state() (format {STATE_FORMAT}), got {state!r:.200}"
            )
        if (
            state.get("judge") != self.judge.name
            or state.get("judge_options") != self.judge.options()
        ):
            raise AnalysisError(
                f"state was saved by judge {state.get('judge')!r} with options {state.get('judge_options')!r}, "
                f"not {self.judge.name!r} with {self.judge.options()!r}"
            )
        missing = {check.name for check in self.checks} - set(state.get("judge_state", {}))
        if missing:
            raise AnalysisError(
                f"state has no entry for check(s) {sorted(missing)}; it belongs to another analysis"
            )
        return copy.deepcopy(state)

    def state(self) -> dict[str, Any]:
        """A JSON-serializable copy of the analysis's progress."""
        return copy.deepcopy(self._state)

    def _bake_done(self, elapsed: float) -> bool:
        start = self._state["start"]
        return start is not None and elapsed - start >= self.bake_time_seconds

    # -- planning ----------------------------------------------------------------------

    def _counter_queries(self) -> dict[str, str]:
        out = {}
        for check in self.checks:
            for role, promql in check.counters(self.arms).items():
                out[_query_id(check, role)] = promql
        return out

    @cached_property
    def _subset_counters(self) -> dict[str, str]:
        """Each arm's bad-requests counter id -> its requests counter id (``advance_counters``)."""
        out = {}
        for check in self.checks:
            roles = check.counters(self.arms)
            for arm in Arm:
                bad, total = arm_role(arm, "bad"), arm_role(arm, "total")
                if bad in roles and total in roles:
                    out[_query_id(check, bad)] = _query_id(check, total)
        return out

    def _bucket_queries(self) -> dict[str, str]:
        out = {}
        for check in self.checks:
            for role, promql in check.buckets(self.arms).items():
                out[_query_id(check, role)] = promql
        return out

    @cached_property
    def _every_poll(self) -> tuple[Query, ...]:
        """The counter and histogram queries, the same at every poll: built once."""
        queries = [Query(qid, promql) for qid, promql in self._counter_queries().items()]
        queries += [
            Query(qid, promql, "vector", by="le") for qid, promql in self._bucket_queries().items()
        ]
        return tuple(queries)

    def plan(self, elapsed_seconds: float) -> list[Query]:
        """The queries to run at this poll; none once the verdict is final."""
        if self._state["final"] is not None:
            return []
        queries = list(self._every_poll)
        start = self._state["start"]
        if start is None:
            # The baseline readings of the step, plus one run of every value and series query
            # (results unused) so that PromQL Prometheus rejects fails the step now, not when
            # the bake time is over.
            since = self.poll_interval_seconds
            bake_done = True
        else:
            since = max(elapsed_seconds - start, self.poll_interval_seconds)
            bake_done = self._bake_done(elapsed_seconds)
        if start is None or self.judge.wants_values(bake_done):
            window = since if self.judge.window_seconds is None else self.judge.window_seconds
            for check in self.checks:
                for role, promql in check.values(self.arms, window).items():
                    queries.append(Query(_query_id(check, role), promql))
        if start is None or self.judge.wants_series(bake_done):
            step = self.judge.series_step_seconds
            for check in self.checks:
                for role, promql in check.series(self.arms, step).items():
                    queries.append(Query(_query_id(check, role), promql, "range", step, since))
        return queries

    # -- observing ---------------------------------------------------------------------

    def observe(
        self,
        elapsed_seconds: float,
        samples: Mapping[str, float | None | list[float] | QueryFailure],
    ) -> Verdict:
        """Fold one poll's samples into the state and return the verdict as it stands."""
        st = self._state
        if st["final"] is not None:
            return Verdict.from_dict(st["final"])
        planned = self.plan(elapsed_seconds)
        st["polls"] += 1
        failures, rejected = query_failures((query.id for query in planned), samples)
        if rejected:
            reason = f"Prometheus rejected a query, asking again cannot help: {rejected[0]}"
            return self._finish(
                Verdict(
                    Status.FAIL, True, reason, (), st["polls"], elapsed_seconds, self.judge.name
                )
            )
        if failures:
            st["failed_polls"] += 1
            if st["failed_polls"] >= self.max_inconclusive_polls:
                reason = f"Prometheus failed {st['failed_polls']} polls in a row: {failures[0]}"
                return self._finish(
                    Verdict(
                        Status.FAIL, True, reason, (), st["polls"], elapsed_seconds, self.judge.name
                    )
                )
            reason = f"Prometheus query failed ({st['failed_polls']} of {self.max_inconclusive_polls} allowed in a row): {failures[0]}"
            return self._inconclusive(reason, elapsed_seconds)
        st["failed_polls"] = 0
        if st["start"] is None and not self._has_baseline_data(samples):
            reason = (
                "no baseline yet: Prometheus has no sample above zero for any of the step's "
                "counters at this time (no traffic yet, or a gap in its history); the first "
                "poll with data is the baseline"
            )
            return self._inconclusive(reason, elapsed_seconds)
        counters = self._counter_queries()
        st["counters"].update(
            advance_counters(
                st["counters"], {qid: samples[qid] for qid in counters}, self._subset_counters
            )
        )
        buckets = st.setdefault("buckets", {})
        for qid in self._bucket_queries():
            buckets[qid] = advance_buckets(buckets.get(qid), samples[qid])
        if st["start"] is None:
            st["start"] = float(elapsed_seconds)
            reason = "took the baseline readings of the step; the comparison starts now"
            return self._inconclusive(reason, elapsed_seconds)
        self._record_history(elapsed_seconds)
        bake_done = self._bake_done(elapsed_seconds)
        results: list[Classification] = []
        for check in self.checks:
            obs = self._observation(check, elapsed_seconds, bake_done, samples)
            results.append(self.judge.classify(obs, st["judge_state"][check.name]))
        results = self.judge.combine(results, st["judge_state"], bake_done)
        return self._decide(elapsed_seconds, bake_done, results)

    def _inconclusive(self, reason: str, elapsed_seconds: float) -> Verdict:
        """A verdict that is not final: keep polling."""
        return Verdict(
            Status.INCONCLUSIVE,
            False,
            reason,
            (),
            self._state["polls"],
            elapsed_seconds,
            self.judge.name,
        )

    def _has_baseline_data(self, samples: Mapping[str, Any]) -> bool:
        """Whether a poll can be the step's baseline.

        It can unless nothing reads above zero and every counter that has no ``or vector(0)``
        fallback is absent. Counting a series absent at the baseline from zero is right for a
        counter nobody incremented yet (the canary's, before its first request); but when every
        plain ``sum(...)`` is absent and the fallbacks read 0, Prometheus had nothing at that
        time: a gap in its history (e.g. while it restarted), or no traffic at all yet. A
        baseline of zeros there would count every request since the counters were created
        into the step's comparison; the first poll with data is the baseline instead.
        """
        plain = []
        for qid, promql in self._counter_queries().items():
            value = clean_number(samples.get(qid))
            if value is not None and value > 0:
                return True
            if not _ZERO_FALLBACK.search(promql):
                plain.append(value)
        for qid in self._bucket_queries():
            raw = samples.get(qid)
            if isinstance(raw, dict) and any((clean_number(v) or 0.0) > 0 for v in raw.values()):
                return True
        return not plain or any(value is not None for value in plain)

    def _record_history(self, elapsed: float) -> None:
        window = self.judge.window_seconds
        if window is None:
            return
        history = self._state["history"]
        history.append([elapsed, {qid: t["total"] for qid, t in self._state["counters"].items()}])
        # Keep the newest entry at least `window` old, and everything after it.
        cut = 0
        for i, (t, _) in enumerate(history):
            if t <= elapsed - window:
                cut = i
        del history[:cut]

    def _totals_at_window_start(self, elapsed: float) -> dict[str, float]:
        window = self.judge.window_seconds
        if window is None:
            return {}
        older = [values for t, values in self._state["history"] if t <= elapsed - window]
        return older[-1] if older else {}

    def _observation(
        self, check: Check, elapsed: float, bake_done: bool, samples: Mapping[str, Any]
    ) -> Observation:
        counters = self._state["counters"]
        window_start = self._totals_at_window_start(elapsed)
        has_series = bool(check.series(self.arms, self.judge.series_step_seconds))

        def arm_obs(arm: Arm) -> ArmObservation:
            total_id, bad_id = (
                _query_id(check, f"{arm.value}.total"),
                _query_id(check, f"{arm.value}.bad"),
            )
            total = counters.get(total_id, {"total": 0.0, "seen": True})
            bad = counters.get(bad_id)
            since = Counts(
                total["total"], None if bad is None else min(bad["total"], total["total"])
            )
            w_total = total["total"] - window_start.get(total_id, 0.0)
            w_bad = (
                None
                if bad is None
                else max(0.0, min(bad["total"] - window_start.get(bad_id, 0.0), w_total))
            )
            value_sample = samples.get(_query_id(check, f"{arm.value}.value"))
            series_sample = samples.get(_query_id(check, f"{arm.value}.series"))
            prefix = _query_id(check, f"{arm.value}.")
            extra = {
                qid[len(prefix) :]: track["total"]
                for qid, track in counters.items()
                if qid.startswith(prefix) and qid not in (total_id, bad_id)
            }
            tracks = self._state.get("buckets", {}).get(_query_id(check, f"{arm.value}.buckets"))
            buckets = {
                bound: float(track["total"])
                for le, track in (tracks or {}).items()
                if (bound := parse_le(le)) is not None
            }
            return ArmObservation(
                since_start=since,
                window=Counts(w_total, w_bad),
                seen=bool(total["seen"]),
                value=clean_value(value_sample),
                series=clean_series(series_sample),
                buckets=buckets,
                extra=extra,
            )

        return Observation(
            check, arm_obs(Arm.CANARY), arm_obs(Arm.STABLE), elapsed, bake_done, has_series
        )

    def _decide(self, elapsed: float, bake_done: bool, results: list[Classification]) -> Verdict:
        st = self._state
        checks = tuple(c.result for c in results)
        failing = [c.result for c in results if c.decisive]
        if failing:
            reason = "; ".join(r.message for r in failing)
            return self._finish(
                Verdict(Status.FAIL, True, reason, checks, st["polls"], elapsed, self.judge.name)
            )
        if bake_done and all(r.status is Status.PASS for r in checks):
            reason = "; ".join(r.message for r in checks)
            return self._finish(
                Verdict(Status.PASS, True, reason, checks, st["polls"], elapsed, self.judge.name)
            )
        pending = "; ".join(r.message for r in checks if r.status is not Status.PASS)
        if bake_done:
            reason = f"bake time over, not enough evidence to pass: {pending}"
        else:
            baked = elapsed - st["start"]
            reason = f"baking {_duration_text(baked)} of {_duration_text(self.bake_time_seconds)}: {pending}"
        return Verdict(
            Status.INCONCLUSIVE, False, reason, checks, st["polls"], elapsed, self.judge.name
        )

    def _finish(self, verdict: Verdict) -> Verdict:
        self._state["final"] = verdict.to_dict()
        json.dumps(self._state)  # the state must stay JSON; fail here rather than in the trigger
        return verdict
