"""The shadow judge: e-values on paired predictions, FAIL as early as the evidence allows.

**Disagreement (and tail) shares.** For ``PredictionAgreementCheck`` the k of n paired requests
whose classes differ are tested against H0: disagreement rate <= ``max_disagreement`` = p0 with
the binomial mixture likelihood ratio of the sequential judge (``log_mixture_lr``: a Beta(1,
1/p0) prior truncated to (p0, 1); Robbins 1970; Ramdas, Grünwald, Vovk & Shafer 2023, Statist.
Sci. 38(4), section 3). It depends only on (k, n), is a nonnegative martingale under H0 with
mean 1, and so may be read after every pair. ``PredictionDeltaCheck.max_quantile_abs`` is the
same test on the pairs whose |delta| exceeds it, with p0 = 1 - quantile (the q-quantile of
|delta| is at most x exactly when at most 1 - q of the pairs exceed x).

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

from airflow_canary.analysis.judges.base import number
from airflow_canary.analysis.judges.sequential import log_mean_exp, log_mixture_lr
from airflow_canary.analysis.shadow.checks import (
    Compared,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
    ShadowCheck,
)
from airflow_canary.analysis.shadow.pairing import Pair, Pairing
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
        """``check.min_pairs``, else the pairs a v2 at twice each of its limits needs to FAIL."""
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

    def evidence(self, check: ShadowCheck, pairs: Sequence[Pair]) -> CheckEvidence:
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
            )
            order = [i for i, v in zip(compared.index, compared.values, strict=True) if v > 0]
        elif isinstance(check, PredictionDeltaCheck):
            headline, order = self._delta_tests(check, compared, tests)
        else:  # pragma: no cover - the two kinds above are all there is
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

    def _delta_tests(
        self, check: PredictionDeltaCheck, compared: Compared, tests: list[Test]
    ) -> tuple[str, list[int]]:
        values, n = compared.values, len(compared.values)
        what = "|v2 - v1|" if check.on == "value" else "largest |v2 - v1| of a class score"
        parts = []
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
        headline = f"{what} on {n:,} paired requests: {', '.join(parts)}"
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
        checks: Sequence[ShadowCheck],
        *,
        elapsed_seconds: float,
        duration_seconds: float,
        polls: int = 1,
    ) -> ShadowVerdict:
        """The phase's verdict at this poll.

        FAIL (final) as soon as the mean e-value of the checks reaches the threshold; before
        ``duration_seconds`` otherwise INCONCLUSIVE (not final); after it PASS when every check
        has its pairs needed, else INCONCLUSIVE (final) saying how many were missing.
        """
        if not checks:
            raise AnalysisError("the shadow phase needs at least one check")
        evidence = tuple(self.evidence(check, pairing.pairs) for check in checks)
        log_e = log_mean_exp([ev.log_e for ev in evidence])
        budget = f"e-value {_fmt_e(log_e)} {'>=' if log_e >= self.log_threshold else 'below'} {self.budget_text()}"
        if log_e >= self.log_threshold:
            status, final = Status.FAIL, True
            worst = max(evidence, key=lambda ev: ev.log_e)
            reason = f"{worst.headline}; {budget}"
        elif elapsed_seconds < duration_seconds:
            status, final = Status.INCONCLUSIVE, False
            reason = f"judging for {duration_seconds:g} s: {'; '.join(ev.headline for ev in evidence)}; {budget}"
        else:
            short = [ev for ev in evidence if ev.pairs < ev.needed]
            if short:
                status, final = Status.INCONCLUSIVE, True
                reason = "too few pairs to pass: " + "; ".join(
                    f"{ev.check.name} has {ev.pairs:,} comparable pair(s) of the {ev.needed:,} needed"
                    for ev in short
                )
            else:
                status, final = Status.PASS, True
                reason = f"{'; '.join(ev.headline for ev in evidence)}; {budget}"
        reason = f"{reason} ({pairing.describe()})"
        results = tuple(self._result(ev, status, final) for ev in evidence)
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

    def _result(self, ev: CheckEvidence, phase: Status, final: bool) -> CheckResult:
        if ev.log_e >= self.log_threshold:
            status = Status.FAIL
        elif final and phase is not Status.FAIL and ev.pairs >= ev.needed:
            status = Status.PASS
        else:
            status = Status.INCONCLUSIVE
        left_out = f"; {ev.not_comparable:,} pair(s) not comparable" if ev.not_comparable else ""
        return CheckResult(
            name=ev.check.name,
            status=status,
            canary_value=ev.tests[0].observed if ev.tests else None,
            stable_value=None,
            canary_requests=ev.pairs,
            stable_requests=ev.pairs,
            statistic=_json_e(ev.log_e),
            p_value=None,
            message=f"{ev.headline}; e-value {_fmt_e(ev.log_e)}; pairs needed to pass {ev.needed:,}{left_out}",
        )
