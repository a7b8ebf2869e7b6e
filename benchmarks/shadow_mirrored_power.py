"""Shadow phase power on v2's mirrored requests: requests and time a failing v2 needs to FAIL.

Not a test. Simulates v2's mirrored requests in a shadow phase, each failing (an error, or a
request slower than the latency check's bound) independently with probability r, and applies
the shadow judge to them: the binomial mixture e-value ``log_mixture_lr(k, n - k, max_rate)``
(the very function ``ShadowJudge`` uses for ``MirroredErrorRateCheck``; ``MirroredLatencyCheck``
is the same test with max_rate = 1 - quantile), averaged, as in the example DAG, with an
agreement check that has no pair (e-value 1: a v2 that fails requests writes no prediction).
The phase FAILs when that mean reaches 1/(alpha x budget_share). Usage:

    .venv/bin/python benchmarks/shadow_mirrored_power.py [--rate 200] [--mirror 100] [--poll 2] [--runs 1000]

Columns: the limit, v2's true failure rate, the mirrored requests needed to PASS (the judge's
default ``min_requests``), the requests a v2 on its expected path needs to FAIL (alone, and
beside the pairless agreement check), the median and p90 requests to FAIL in simulation (judged
every 10 requests), and the median and p90 time to FAIL at ``rate`` requests/s mirrored at
``mirror``% and polled every ``poll`` seconds (counted from the baseline poll).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from shadow_power import pairs_to_fail

from airflow_canary.analysis.judges.sequential import log_mixture_lr
from airflow_canary.analysis.shadow import MirroredErrorRateCheck, ShadowJudge

LIMITS = (0.01, 0.02, 0.2)
RATES = (0.05, 0.1, 0.3, 0.5, 1.0)


def expected_requests(p0: float, r: float, log_threshold: float) -> int:
    """Mirrored requests at which k = r x n failing ones take the e-value over the threshold."""
    n = 1
    while log_mixture_lr(r * n, (1 - r) * n, p0) < log_threshold:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="live requests/s (demo: 200)")
    parser.add_argument("--mirror", type=float, default=100.0, help="mirror percentage")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument(
        "--budget-share",
        type=float,
        default=0.25,
        help="the shadow phase's share of the rollout's budget (0.25: it and 3 weight steps)",
    )
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    started = time.perf_counter()
    judge = ShadowJudge(alpha=args.alpha, budget_share=args.budget_share)
    # The mean of two e-values, one of them 1, reaches T when the other reaches 2T - 1.
    beside = math.log(2 * math.exp(judge.log_threshold) - 1)
    per_s = args.rate * args.mirror / 100
    rng = np.random.default_rng(args.seed)
    print(
        f"threshold {judge.budget_text()}; {per_s:g} mirrored requests/s ({args.rate:g} req/s, "
        f"mirror {args.mirror:g}%), polls every {args.poll:g} s; {args.runs} runs per row\n"
    )
    print(
        "| max_rate | v2 fails | requests to pass (min_requests) | requests to FAIL, expected "
        "path: alone / beside agreement | requests to FAIL, median / p90 | time to FAIL, "
        "median / p90 |"
    )
    print("|" + " --- |" * 6)
    for p0 in LIMITS:
        needed = judge.pairs_needed(MirroredErrorRateCheck(max_rate=p0))
        for r in (r for r in RATES if r > p0):
            alone = expected_requests(p0, r, judge.log_threshold)
            paired = expected_requests(p0, r, beside)
            horizon = int(paired * 6) + 100
            found = pairs_to_fail(rng, r, p0, beside, args.runs, horizon)
            med, p90 = np.percentile(found, [50, 90])
            polls = np.ceil(found / (per_s * args.poll)) * args.poll
            tmed, tp90 = np.percentile(polls, [50, 90])
            print(
                f"| {p0 * 100:g}% | {r * 100:g}% | {needed:,} | {alone:,} / {paired:,} | "
                f"{med:,.0f} / {p90:,.0f} | {tmed:g} s / {tp90:g} s |"
            )
    print(f"\n({time.perf_counter() - started:.0f} s; seed {args.seed})")


if __name__ == "__main__":
    main()
