"""Shadow phase power: pairs and time a v2 that disagrees with v1 needs to FAIL, and false FAILs.

Not a test. Simulates the paired requests of a shadow phase (every mirrored request pairs with
its live twin), v2 disagreeing with v1 on each pair independently with probability r, and
applies the shadow judge's agreement e-value (``log_mixture_lr(k, n - k, max_disagreement)``,
the very function ``ShadowJudge`` uses) after every 10 pairs and at every poll. Usage:

    .venv/bin/python benchmarks/shadow_power.py [--rate 150] [--mirror 100] [--poll 5] [--runs 1000]

Columns: the limit (``max_disagreement``), v2's true disagreement, the pairs a v2 on its expected
path needs (``pairs_needed_for_share``), the median and p90 pairs to FAIL in simulation, and the
median and p90 time to FAIL at ``rate`` requests/s mirrored at ``mirror``% and polled every
``poll`` seconds; then, computed exactly, the chance that a v2 disagreeing *at* the limit FAILs
within 10 minutes (the error budget: at most alpha x budget_share).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from airflow_canary.analysis.judges.sequential import log_mixture_lr
from airflow_canary.analysis.shadow import PredictionAgreementCheck, ShadowJudge
from airflow_canary.analysis.shadow.judge import pairs_needed_for_share

LIMITS = (0.005, 0.01, 0.02)
RATES = (0.02, 0.05, 0.1)
STRIDE = 10


def pairs_to_fail(
    rng: np.random.Generator, r: float, p0: float, log_threshold: float, runs: int, horizon: int
) -> np.ndarray:
    """Pairs at the first check (every STRIDE pairs) whose e-value reaches the threshold; inf if none."""
    out = np.full(runs, np.inf)
    chunk = 200
    for start in range(0, runs, chunk):
        draws = rng.random((min(chunk, runs - start), horizon)) < r
        k = np.cumsum(draws, axis=1)[:, STRIDE - 1 :: STRIDE]
        n = np.arange(STRIDE, horizon + 1, STRIDE)
        hit = log_mixture_lr(k, n - k, p0) >= log_threshold
        first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        out[start : start + len(first)] = np.where(first >= 0, n[first], np.inf)
    return out


def fail_boundary(p0: float, log_threshold: float, horizon: int) -> np.ndarray:
    """For n = 1..horizon the fewest disagreements k whose e-value reaches the threshold.

    The mixture likelihood ratio grows with k at fixed n, so a vectorised bisection over k
    finds it for every n at once; n + 1 means "not reachable at n".
    """
    n = np.arange(1, horizon + 1, dtype=float)
    low, high = np.zeros_like(n), n + 1
    while np.any(high - low > 1):
        mid = np.floor((low + high) / 2)
        reached = log_mixture_lr(mid, n - mid, p0) >= log_threshold
        high = np.where(reached, mid, high)
        low = np.where(reached, low, mid)
    at_zero = log_mixture_lr(np.zeros_like(n), n, p0) >= log_threshold
    return np.where(at_zero, 0, high).astype(int)


def exact_fail_probability(p: float, p0: float, log_threshold: float, horizon: int) -> float:
    """P(the e-value ever reaches the threshold within ``horizon`` pairs), judged after every pair.

    Exact dynamic programme over the number of disagreements with an absorbing boundary; a
    judge that looks less often (every poll) fails an identical v2 less often still.
    """
    boundary = fail_boundary(p0, log_threshold, horizon)
    size = int(min(boundary.max(), horizon)) + 2
    alive = np.zeros(size)
    alive[0] = 1.0
    crossed = 0.0
    for n in range(1, horizon + 1):
        alive[1:] = alive[1:] * (1 - p) + alive[:-1] * p
        alive[0] *= 1 - p
        edge = boundary[n - 1]
        if edge < size:
            crossed += float(alive[edge:].sum())
            alive[edge:] = 0.0
    return crossed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="live requests/s (the demo: 200)")
    parser.add_argument("--mirror", type=float, default=100.0, help="mirror percentage")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument(
        "--budget-share",
        type=float,
        default=0.2,
        help="the shadow phase's share of the rollout's budget (0.2: it and 4 weight steps)",
    )
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    started = time.perf_counter()
    judge = ShadowJudge(alpha=args.alpha, budget_share=args.budget_share)
    pairs_per_s = args.rate * args.mirror / 100
    per_poll = pairs_per_s * args.poll
    rng = np.random.default_rng(args.seed)
    print(
        f"threshold {judge.budget_text()}; {pairs_per_s:g} pairs/s ({args.rate:g} req/s, mirror "
        f"{args.mirror:g}%), polls every {args.poll:g} s; {args.runs} runs per row\n"
    )
    header = (
        "| max_disagreement | v2 disagrees | pairs to pass (min_pairs) | pairs to FAIL, expected path "
        "| pairs to FAIL, median / p90 | time to FAIL, median / p90 |"
    )
    print(header)
    print("|" + " --- |" * 6)
    for p0 in LIMITS:
        needed = judge.pairs_needed(PredictionAgreementCheck(max_disagreement=p0))
        for r in (r for r in RATES if r > p0):
            expected = pairs_needed_for_share(p0, r, judge.log_threshold)
            horizon = int(expected * 6) + 100
            found = pairs_to_fail(rng, r, p0, judge.log_threshold, args.runs, horizon)
            med, p90 = np.percentile(found, [50, 90])
            polls = np.ceil(found / per_poll) * args.poll
            tmed, tp90 = np.percentile(polls, [50, 90])
            print(
                f"| {p0 * 100:g}% | {r * 100:g}% | {needed:,} | {expected:,} | "
                f"{med:,.0f} / {p90:,.0f} | {tmed:g} s / {tp90:g} s |"
            )
    print("\nA v2 disagreeing exactly at the limit, judged after every pair for 10 minutes:\n")
    print("| max_disagreement | pairs | P(FAIL), exact | budget (alpha x share) |")
    print("| --- | --- | --- | --- |")
    horizon = int(pairs_per_s * 600)
    for p0 in LIMITS:
        chance = exact_fail_probability(p0, p0, judge.log_threshold, horizon)
        print(
            f"| {p0 * 100:g}% | {horizon:,} | {chance * 100:.3f}% | "
            f"{args.alpha * args.budget_share * 100:g}% |"
        )
    print(f"\n({time.perf_counter() - started:.0f} s; seed {args.seed})")


if __name__ == "__main__":
    main()
