"""The shadow judge: e-values on paired predictions, FAIL as early as the evidence allows.

**Disagreement (and tail) shares.** For ``PredictionAgreementCheck`` the k of n paired requests
whose classes differ are tested against H0: disagreement rate <= ``max_disagreement`` = p0 with
the binomial mixture likelihood ratio of the sequential judge (``log_mixture_lr``: a Beta(1,
1/p0) prior truncated to (p0, 1); Robbins 1970; Ramdas, Grünwald, Vovk & Shafer 2023, Statist.
Sci. 38(4), section 3). It depends only on (k, n), is a nonnegative martingale under H0 with
mean 1, and so may be read after every pair. ``PredictionDeltaCheck.max_quantile_abs`` is the
same test on the pairs whose |delta| exceeds it, with p0 = 1 - quantile (the q-quantile of
|delta| is at most x exactly when at most 1 - q of the pairs exceed x).

**v2's mirrored requests.** ``MirroredErrorRateCheck`` and ``MirroredLatencyCheck`` count, from
Istio's destination-reported telemetry since the phase's first poll, the k of v2's n mirrored
requests that failed (or were slower than the bound), and test them exactly as the
disagreements: ``log_mixture_lr(k, n - k, p0)`` with p0 = ``max_rate`` (or 1 - ``quantile``).
They are e-values in the same mean, so a v2 that fails every mirrored request FAILs the phase
within a poll or two, before the pairs it never writes could fall short.

**Mean |delta|.** Differences are clipped at ``clip`` C and scaled to Y = min(|delta|, C)/C in
[0, 1]; H0: E[|delta|] <= m implies E[Y] <= m/C = mu0. For a fixed bet lambda in [0, 1/mu0]
the capital prod(1 + lambda (Y_i - mu0)) is a nonnegative supermartingale under H0
(Waudby-Smith & Ramdas 2024, "Estimating means of bounded random variables by betting", JRSS B
86(1), section 3); the mean over a fixed grid of bets is an e-process too, and it depends only
on the multiset of Y, not on their order.

**One error budget.** A check's e-value is the mean of its tests', the phase's the mean over
its checks (Vovk & Wang 2021, Ann. Statist. 49(3)); by Ville's inequality the phase FAILs an
identical v2 with probability at most alpha x budget_share, however often it is polled. The
shadow phase is part of the rollout's budget: ``budget_share`` is its share.

**Drift is a point estimate.** ``PairedPredictionDriftCheck`` (the live ``PredictionDriftCheck``
in a shadow phase) is judged as the live judge judges it: its PSI, once, when the phase's
duration is over, against ``max_psi``, and only with at least ``min_predictions`` comparable
pairs. It has no e-value, takes no part in the mean, so it spends none of the budget, and it
never ends the phase early.

**Never PASS on too little.** After the phase's duration the verdict is PASS only if every check
has at least its ``min_pairs`` comparable pairs; by default the number of pairs at which a v2
at twice the limit would, on its expected path, reach the FAIL threshold (``pairs_needed``).
Otherwise it is INCONCLUSIVE, saying how many pairs there were and how many were needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.analysis.checks import PredictionDriftCheck
from airflow_canary.analysis.judges.base import number
from airflow_canary.analysis.judges.sequential import log_mean_exp, log_mixture_lr
from airflow_canary.analysis.shadow.checks import (
    Compared,
    MirroredRequestsCheck,
    PairedPredictionDriftCheck,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
    ShadowCheck,
    as_shadow_check,
)
from airflow_canary.analysis.shadow.pairing import Pair, Pairing
from airflow_canary.analysis.shadow.telemetry import TelemetryPoll
from airflow_canary.analysis.values import AnalysisError, Status
from airflow_canary.analysis.verdict import CheckResult, Verdict

#: Bets (as lambda x mu0, a share of the largest safe bet) averaged by the mean test.
BETS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)
#: How many example pairs a verdict keeps per check.
EXAMPLES = 5
#: The alternative the default min_pairs is about: the limit doubled.
POWER_FACTOR = 2.0


def log_betting_e(values: Sequence[float], mu0: float) -> float:
    """ln of the mean over ``BETS`` of prod(1 + lambda (y - mu0)), y in [0, 1], H0: E[y] <= mu0."""
    if not 0 < mu0 < 1:
        raise ValueError(f"mu0 must be in (0, 1), got {mu0!r}")
    if not values:
        return 0.0
    logs = []
    for share in BETS:
        bet = share / mu0
        logs.append(sum(math.log1p(bet * (y - mu0)) for y in values))
    return log_mean_exp(logs)


@dataclass(frozen=True)
class Test:
    """One test of a check: its description, observed statistic and ln e-value."""

    why: str
    observed: float
    log_e: float


@dataclass(frozen=True)
class CheckEvidence:
    """A check's comparable pairs, tests, combined ln e-value and example pairs."""

    check: ShadowCheck
    pairs: int
    not_comparable: int
    tests: tuple[Test, ...]
    log_e: float
    needed: int
    headline: str
    examples: tuple[dict[str, Any], ...] = field(default=())
    #: Whether the check has an e-value in the phase's mean (else it is a point estimate
    #: judged at the end of the phase, like the PSI).
    sequential: bool = True
    #: A point-estimate check's value (the PSI), and whether it is above its limit.
    value: float | None = None
    exceeds: bool = False
    #: What ``pairs`` counts, for messages.
    unit: str = "comparable pair(s)"
    #: Why the check has no data to pass on (e.g. a histogram without its bucket bound).
    no_data: str | None = None

    @property
    def short(self) -> bool:
        return self.no_data is not None or self.pairs < self.needed

    def shortfall(self) -> str:
        if self.no_data is not None:
            return f"{self.check.name}: {self.no_data}"
        return f"{self.check.name} has {self.pairs:,} {self.unit} of the {self.needed:,} needed"


@dataclass(frozen=True)
class ShadowVerdict:
    """The shadow phase's verdict, the pairing behind it and example pairs with both predictions."""

    verdict: Verdict
    pairing: Pairing
    evidence: tuple[CheckEvidence, ...]
    log_e: float

    @property
    def examples(self) -> list[dict[str, Any]]:
        return [example for ev in self.evidence for example in ev.examples]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.verdict.to_dict(),
            "phase": "shadow",
            "e_value": _json_e(self.log_e),
            "pairing": self.pairing.to_dict(),
            "examples": self.examples,
        }


def _json_e(log_e: float) -> float | None:
    if log_e >= 700:
        return None
    return math.exp(log_e)


def _fmt_e(log_e: float) -> str:
    return "> 1e300" if log_e >= 700 else f"{math.exp(log_e):.3g}"


def _pct(share: float) -> str:
    return f"{share * 100:.3g}%"


def _search(reaches: Callable[[int], bool], limit: int = 10**9) -> int:
    """The smallest whole n >= 1 for which ``reaches(n)`` holds (assumed monotone)."""
    high = 1
    while not reaches(high):
        high *= 2
        if high > limit:
            return limit
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid
    return high


def pairs_needed_for_share(p0: float, rate: float, log_threshold: float) -> int:
    """Pairs at which ``rate`` of them being bad takes the mixture e-value over the threshold.

    On the expected path (k = rate x n, as tempered counts) of a v2 that is bad at ``rate``
    against H0: share <= ``p0``; what a judge polled after every pair would need on average.
    """
    if rate <= p0:
        raise ValueError(f"rate {rate!r} must be above the limit {p0!r} to be caught")
    return _search(lambda n: log_mixture_lr(rate * n, (1 - rate) * n, p0) >= log_threshold)


def _alternative(p0: float) -> float:
    return min(POWER_FACTOR * p0, (1 + p0) / 2)


class ShadowJudge:
    """Judge paired predictions against shadow checks, with the rollout's error budget.

    :param alpha: the rollout's error budget, in (0, 0.5)
    :param budget_share: the share of alpha the shadow phase may spend, in (0, 1]
    :raises AnalysisError: naming a bad option
    """

    def __init__(self, alpha: float = 0.01, budget_share: float = 1.0) -> None:
        self.alpha = number("alpha", alpha, low=0, high=0.5)
        self.budget_share = number("budget_share", budget_share, low=0, high=1 + 1e-12)
        self.log_threshold = math.log(1 / (self.alpha * self.budget_share))

    def budget_text(self) -> str:
        share = (
            "" if self.budget_share == 1 else f" x {self.budget_share:.3g} of the rollout's budget"
        )
        return f"1/(alpha {self.alpha:g}{share}) = {math.exp(self.log_threshold):.4g}"

    def pairs_needed(self, check: ShadowCheck) -> int:
        """``check.min_pairs``, else the pairs a v2 at twice each of its limits needs to FAIL;
        for a mirrored-requests check, its ``min_requests`` or the mirrored requests likewise."""
        if isinstance(check, MirroredRequestsCheck):
            if check.min_requests is not None:
                return check.min_requests
            p0 = check.max_share
            return pairs_needed_for_share(p0, _alternative(p0), self.log_threshold)
        if check.min_pairs is not None:
            return check.min_pairs
        needed = []
        if isinstance(check, PredictionAgreementCheck):
            p0 = check.max_disagreement
            needed.append(pairs_needed_for_share(p0, _alternative(p0), self.log_threshold))
        elif isinstance(check, PredictionDeltaCheck):
            if check.max_quantile_abs is not None:
                p0 = 1 - check.quantile
                needed.append(pairs_needed_for_share(p0, _alternative(p0), self.log_threshold))
            if check.max_mean_abs is not None:
                clip = check.clip_at
                assert clip is not None
                mu0 = check.max_mean_abs / clip
                y = _alternative(mu0)
                needed.append(
                    _search(lambda n: log_betting_e([y] * n, mu0) >= self.log_threshold, 10**7)
                )
        return max(needed)

    # -- evidence ------------------------------------------------------------------------

    def evidence(
        self, check: ShadowCheck, pairs: Sequence[Pair], telemetry: TelemetryPoll | None = None
    ) -> CheckEvidence:
        if isinstance(check, MirroredRequestsCheck):
            return self._mirrored_evidence(check, telemetry)
        if isinstance(check, PairedPredictionDriftCheck):
            return self._drift_evidence(check, pairs)
        compared = check.compare(pairs)
        n = len(compared.values)
        tests: list[Test] = []
        if isinstance(check, PredictionAgreementCheck):
            k = sum(compared.values)
            share = k / n if n else 0.0
            tests.append(
                Test(
                    f"above max_disagreement {_pct(check.max_disagreement)}",
                    share,
                    log_mixture_lr(k, n - k, check.max_disagreement) if n else 0.0,
                )
            )
            headline = (
                f"v2 disagrees with v1 on {_pct(share)} of {n:,} paired requests "
                f"(limit {_pct(check.max_disagreement)})"
                if n
                else f"v2's agreement with v1: no paired request yet (limit "
                f"{_pct(check.max_disagreement)} disagreement)"
            )
            order = [i for i, v in zip(compared.index, compared.values, strict=True) if v > 0]
        elif isinstance(check, PredictionDeltaCheck):
            headline, order = self._delta_tests(check, compared, tests)
        else:  # pragma: no cover - the kinds above are all there is
            raise AnalysisError(f"not a shadow check: {check!r}")
        log_e = log_mean_exp([t.log_e for t in tests]) if tests else 0.0
        examples = tuple(self._example(check, pairs[i]) for i in order[:EXAMPLES])
        return CheckEvidence(
            check,
            n,
            compared.not_comparable,
            tuple(tests),
            log_e,
            self.pairs_needed(check),
            headline,
            examples,
        )

    def _mirrored_evidence(
        self, check: MirroredRequestsCheck, telemetry: TelemetryPoll | None
    ) -> CheckEvidence:
        counts = telemetry.counts.get(check.name) if telemetry is not None else None
        requests = counts.requests if counts is not None else 0.0
        bad = counts.bad if counts is not None else 0.0
        no_data = None
        if counts is None:
            no_data = (
                telemetry.note
                if telemetry is not None and telemetry.note
                else "no reading of Istio telemetry yet"
            )
        elif bad is None:
            no_data = (
                "Prometheus has v2's mirrored requests but no series for the bad ones among "
                "them (e.g. a histogram without that bucket bound)"
            )
        k = bad or 0.0
        log_e = log_mixture_lr(k, requests - k, check.max_share) if requests > 0 else 0.0
        headline = check.headline(k, requests)
        if no_data is not None:
            headline = f"{headline}; {no_data}"
        return CheckEvidence(
            check,
            int(round(requests)),
            0,
            (Test(f"above {_pct(check.max_share)}", k / requests if requests else 0.0, log_e),),
            log_e,
            self.pairs_needed(check),
            headline,
            unit="mirrored request(s)",
            no_data=no_data,
        )

    def _drift_evidence(
        self, check: PairedPredictionDriftCheck, pairs: Sequence[Pair]
    ) -> CheckEvidence:
        drift = check.measure(pairs)
        exceeds = drift.psi is not None and drift.psi > check.max_psi
        psi = "not measured (no comparable pair)" if drift.psi is None else f"{drift.psi:.3f}"
        limit = f"exceeds max_psi {check.max_psi:g}" if exceeds else f"(limit {check.max_psi:g})"
        headline = (
            f"PSI {psi} of v2's predicted classes against v1's on {drift.pairs:,} paired "
            f"requests {limit}"
        )
        examples = tuple(self._example(check, pairs[i]) for i in drift.changed[:EXAMPLES])
        return CheckEvidence(
            check,
            drift.pairs,
            drift.not_comparable,
            (),
            0.0,
            self.pairs_needed(check),
            headline,
            examples,
            sequential=False,
            value=drift.psi,
            exceeds=exceeds,
        )

    def _delta_tests(
        self, check: PredictionDeltaCheck, compared: Compared, tests: list[Test]
    ) -> tuple[str, list[int]]:
        values, n = compared.values, len(compared.values)
        what = "|v2 - v1|" if check.on == "value" else "largest |v2 - v1| of a class score"
        parts, limits = [], []
        if check.max_mean_abs is not None:
            clip = check.clip_at
            assert clip is not None
            mean = sum(values) / n if n else 0.0
            mu0 = check.max_mean_abs / clip
            scaled = [min(v, clip) / clip for v in values]
            tests.append(
                Test(
                    f"mean above max_mean_abs {check.max_mean_abs:g}",
                    mean,
                    log_betting_e(scaled, mu0),
                )
            )
            parts.append(f"mean {mean:.4g} (limit {check.max_mean_abs:g})")
            limits.append(f"mean limit {check.max_mean_abs:g}")
        if check.max_quantile_abs is not None:
            over = sum(1 for v in values if v > check.max_quantile_abs)
            p0 = 1 - check.quantile
            tests.append(
                Test(
                    f"more than {_pct(p0)} of pairs above max_quantile_abs {check.max_quantile_abs:g}",
                    over / n if n else 0.0,
                    log_mixture_lr(over, n - over, p0) if n else 0.0,
                )
            )
            parts.append(
                f"{_pct(over / n if n else 0.0)} of pairs above {check.max_quantile_abs:g} "
                f"(q{check.quantile * 100:g} limit: at most {_pct(p0)})"
            )
            limits.append(
                f"q{check.quantile * 100:g} limit: at most {_pct(p0)} above "
                f"{check.max_quantile_abs:g}"
            )
        headline = (
            f"{what} on {n:,} paired requests: {', '.join(parts)}"
            if n
            else f"{what}: no paired request yet ({', '.join(limits)})"
        )
        ranked = sorted(zip(compared.index, values, strict=True), key=lambda iv: -iv[1])
        return headline, [i for i, v in ranked if v > 0]

    @staticmethod
    def _example(check: ShadowCheck, pair: Pair) -> dict[str, Any]:
        return {
            "check": check.name,
            "request_id": pair.request_id,
            "instance": pair.stable.instance,
            "stable": {
                "version": pair.stable.version,
                "prediction": pair.stable.prediction.to_dict(),
            },
            "canary": {
                "version": pair.canary.version,
                "prediction": pair.canary.prediction.to_dict(),
            },
        }

    # -- verdict -------------------------------------------------------------------------

    def judge(
        self,
        pairing: Pairing,
        checks: Sequence[ShadowCheck | PredictionDriftCheck],
        *,
        elapsed_seconds: float,
        duration_seconds: float,
        polls: int = 1,
        telemetry: TelemetryPoll | None = None,
    ) -> ShadowVerdict:
        """The phase's verdict at this poll.

        ``telemetry`` is the latest poll of Istio telemetry, for the mirrored-requests checks
        (None: no reading). FAIL (final) as soon as the mean e-value of the checks reaches the
        threshold, or when Prometheus rejected a query or failed its polls too often in a row;
        at a poll where it failed, INCONCLUSIVE (not final); before
        ``duration_seconds`` otherwise INCONCLUSIVE (not final); after it PASS when every check
        has its pairs needed, else INCONCLUSIVE (final) saying how many were missing.
        """
        if not checks:
            raise AnalysisError("the shadow phase needs at least one check")
        evidence = tuple(
            self.evidence(as_shadow_check(check), pairing.pairs, telemetry) for check in checks
        )
        sequential = [ev.log_e for ev in evidence if ev.sequential]
        log_e = log_mean_exp(sequential) if sequential else 0.0
        ended = elapsed_seconds >= duration_seconds
        budget = f"e-value {_fmt_e(log_e)} {'>=' if log_e >= self.log_threshold else 'below'} {self.budget_text()}"
        drifted = [
            ev for ev in evidence if not ev.sequential and ev.exceeds and ev.pairs >= ev.needed
        ]
        short = [ev for ev in evidence if ev.short]
        headlines = "; ".join(ev.headline for ev in evidence)
        if log_e >= self.log_threshold:
            status, final = Status.FAIL, True
            worst = max((ev for ev in evidence if ev.sequential), key=lambda ev: ev.log_e)
            # The check with the most evidence leads; the others follow, as on a PASS.
            others = "".join(f"; {ev.headline}" for ev in evidence if ev is not worst)
            reason = f"{worst.headline}{others}; {budget}"
        elif telemetry is not None and telemetry.rejected is not None:
            status, final = Status.FAIL, True
            reason = f"Prometheus rejected a query, asking again cannot help: {telemetry.rejected}"
        elif telemetry is not None and telemetry.exhausted:
            status, final = Status.FAIL, True
            reason = (
                f"Prometheus failed {telemetry.failed_polls} polls in a row: {telemetry.failure}"
            )
        elif telemetry is not None and telemetry.failure is not None:
            status, final = Status.INCONCLUSIVE, False
            reason = (
                f"Prometheus query failed ({telemetry.failed_polls} of "
                f"{telemetry.max_failed_polls} allowed in a row): {telemetry.failure}; "
                f"{headlines}; {budget}"
            )
        elif not ended:
            status, final = Status.INCONCLUSIVE, False
            reason = f"judging for {duration_seconds:g} s: {headlines}; {budget}"
        elif drifted:
            status, final = Status.FAIL, True
            reason = (
                f"{'; '.join(ev.headline for ev in drifted)}, judged on its value at the end "
                f"of the phase; {budget}"
            )
        elif short:
            status, final = Status.INCONCLUSIVE, True
            what = (
                "too few pairs"
                if all(ev.unit == "comparable pair(s)" for ev in short)
                else "too little evidence"
            )
            reason = f"{what} to pass: " + "; ".join(ev.shortfall() for ev in short)
        else:
            status, final = Status.PASS, True
            reason = f"{headlines}; {budget}"
        reason = f"{reason} ({pairing.describe()})"
        results = tuple(self._result(ev, status, final, ended) for ev in evidence)
        verdict = Verdict(
            status=status,
            final=final,
            reason=reason,
            checks=results,
            polls=polls,
            elapsed_seconds=elapsed_seconds,
            judge="shadow-sequential",
        )
        return ShadowVerdict(verdict, pairing, evidence, log_e)

    def _result(self, ev: CheckEvidence, phase: Status, final: bool, ended: bool) -> CheckResult:
        left_out = f"; {ev.not_comparable:,} pair(s) not comparable" if ev.not_comparable else ""
        unit = "pairs" if ev.unit == "comparable pair(s)" else ev.unit.replace("(s)", "s")
        needed = f"{unit} needed to pass {ev.needed:,}{left_out}"
        if not ev.sequential:
            if ended and ev.pairs >= ev.needed:
                status = Status.FAIL if ev.exceeds else Status.PASS
            else:
                status = Status.INCONCLUSIVE
            return CheckResult(
                name=ev.check.name,
                status=status,
                canary_value=ev.value,
                stable_value=None,
                canary_requests=ev.pairs,
                stable_requests=ev.pairs,
                statistic=None,
                p_value=None,
                message=(
                    f"{ev.headline}; judged on its value at the end of the phase, outside the "
                    f"e-value budget; {needed}"
                ),
            )
        if ev.log_e >= self.log_threshold:
            status = Status.FAIL
        elif final and not ev.short and (phase is not Status.FAIL or ended):
            status = Status.PASS
        else:
            status = Status.INCONCLUSIVE
        return CheckResult(
            name=ev.check.name,
            status=status,
            canary_value=ev.tests[0].observed if ev.tests else None,
            stable_value=None,
            canary_requests=ev.pairs,
            # v1 gets no mirrored request: a mirrored-requests check counts v2's alone
            stable_requests=0 if isinstance(ev.check, MirroredRequestsCheck) else ev.pairs,
            statistic=_json_e(ev.log_e),
            p_value=None,
            message=f"{ev.headline}; e-value {_fmt_e(ev.log_e)}; {needed}",
        )
