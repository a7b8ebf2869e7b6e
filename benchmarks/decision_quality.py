"""Decision quality of the judges on simulated Istio counters: false rollbacks and time to detect.

Not a test. Simulates the seed's load (10,000 requests/min, stable error rate 1%, lognormal
latency with p99 ~200 ms) with the canary at 1%, 10% and 50% of traffic, generates the
cumulative counters Prometheus would return at each 15 s poll, and feeds them to the real
judges through CanaryAnalysis. Usage:

    .venv/bin/python benchmarks/decision_quality.py [--runs 1000] [--detect-runs 200] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from airflow_canary.analysis import (
    ISTIO_DURATION_BUCKETS_MS,
    Arms,
    CanaryAnalysis,
    Check,
    ErrorRateCheck,
    LatencyCheck,
    Status,
)

RPM = 10_000
STABLE_ERROR = 0.01
LAT_MEDIAN_MS, LAT_SIGMA = 50.0, 0.596  # p99 = 50 * exp(2.326 * 0.596) ~ 200 ms
BAKE, POLL = 600.0, 15.0
ARMS = Arms("default")
BOUNDS = np.array(ISTIO_DURATION_BUCKETS_MS)


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_error: float = STABLE_ERROR
    latency_factor: float = 1.0


SCENARIOS = [
    Scenario("v2 = v1"),
    Scenario("errors 1% -> 2%", canary_error=0.02),
    Scenario("errors 1% -> 5%", canary_error=0.05),
    Scenario("p99 latency +50%", latency_factor=1.5),
]


@dataclass(frozen=True)
class JudgeSetup:
    label: str
    judge: str
    checks: tuple[Check, ...]
    poll: float = POLL
    options: tuple[tuple[str, object], ...] = ()


SETUPS = [
    JudgeSetup(
        "sequential",
        "sequential",
        (ErrorRateCheck(max_ratio=1.25), LatencyCheck(slo_ms=250, max_ratio=1.5)),
    ),
    JudgeSetup(
        "threshold (15s, 60s window, 5 in a row)",
        "threshold",
        (ErrorRateCheck(max_ratio=2.0), LatencyCheck(quantile=0.99, max_ms=250, max_ratio=1.5)),
    ),
    JudgeSetup(
        "mann_whitney (98%, 25% band, 1-min steps)",
        "mann_whitney",
        (ErrorRateCheck(max_ratio=2.0), LatencyCheck(quantile=0.99, max_ratio=1.25, slo_ms=250)),
    ),
    JudgeSetup(
        "Flagger-style (1m, 5 in a row, success >= 99%)",
        "threshold",
        (ErrorRateCheck(max_rate=0.01), LatencyCheck(quantile=0.99, max_ms=500)),
        poll=60.0,
        options=(("failure_threshold", 5), ("window_seconds", 60.0)),
    ),
]


def bucket_probabilities(factor: float) -> np.ndarray:
    """P(latency <= bound) for each Istio bucket bound, lognormal latency scaled by factor."""
    return stats.lognorm.cdf(BOUNDS, s=LAT_SIGMA, scale=LAT_MEDIAN_MS * factor)


def histogram_quantile(q: float, cumulative: np.ndarray, total: float) -> float:
    """Prometheus's histogram_quantile on cumulative bucket counts (linear inside a bucket)."""
    if total <= 0:
        return math.nan
    rank = q * total
    i = int(np.searchsorted(cumulative, rank))
    if i >= len(BOUNDS):
        return float(BOUNDS[-1])
    lower, below = (0.0, 0.0) if i == 0 else (BOUNDS[i - 1], cumulative[i - 1])
    inside = cumulative[i] - below
    return float(lower + (BOUNDS[i] - lower) * ((rank - below) / inside if inside else 0.0))


def simulate_arm(
    rng: np.random.Generator, share: float, error: float, factor: float, slices: int
) -> dict[str, np.ndarray]:
    """Per-15s slices of one arm: requests, errors and cumulative bucket counts."""
    requests = rng.poisson(RPM / 4 * share, slices)
    errors = rng.binomial(requests, error)
    probs = np.diff(np.concatenate([[0.0], bucket_probabilities(factor), [1.0]]))
    buckets = np.cumsum(
        rng.multinomial(requests, probs)[:, :-1], axis=1
    )  # per slice, cumulative over le
    return {"requests": requests, "errors": errors, "buckets": buckets}


def run_once(
    rng: np.random.Generator, setup: JudgeSetup, weight: float, scenario: Scenario
) -> float | None:
    """Seconds until a final FAIL, or None when the analysis passed or never decided."""
    slices = int(BAKE / POLL) + 1
    canary = simulate_arm(rng, weight, scenario.canary_error, scenario.latency_factor, slices)
    stable = simulate_arm(rng, 1 - weight, STABLE_ERROR, 1.0, slices)
    slo_index = int(np.searchsorted(BOUNDS, 250))
    cum = {}
    for arm, data in (("canary", canary), ("stable", stable)):
        requests = np.cumsum(data["requests"])
        cum[f"error-rate/{arm}.total"] = requests
        cum[f"error-rate/{arm}.bad"] = np.cumsum(data["errors"])
        cum[f"latency/{arm}.total"] = requests
        cum[f"latency/{arm}.bad"] = requests - np.cumsum(data["buckets"][:, slo_index])
    analysis = CanaryAnalysis(
        ARMS, setup.checks, setup.judge, BAKE, setup.poll, judge_options=dict(setup.options)
    )
    per_poll = int(round(setup.poll / POLL))
    # The step started just before the first poll; slice 0 is the traffic before the baseline.
    for poll in range(0, slices, per_poll):
        elapsed = poll * POLL
        samples: dict[str, object] = {}
        for query in analysis.plan(elapsed):
            if query.id in cum:
                samples[query.id] = float(cum[query.id][poll])
            else:
                samples[query.id] = value_sample(query.id, query.kind, canary, stable, poll, setup)
        verdict = analysis.observe(elapsed, samples)
        if verdict.final:
            return elapsed if verdict.status is Status.FAIL else None
    return None


def value_sample(
    qid: str, kind: str, canary: dict, stable: dict, poll: int, setup: JudgeSetup
) -> object:
    """What Prometheus would answer to a quantile query: over the last minute, or per minute."""
    data = canary if "/canary." in qid else stable
    check = next(c for c in setup.checks if qid.startswith(c.name + "/"))
    quantile = float(getattr(check, "quantile", 0.99))

    def window_quantile(first: int, last: int) -> float:
        total = float(data["requests"][first : last + 1].sum())
        return histogram_quantile(quantile, data["buckets"][first : last + 1].sum(axis=0), total)

    if kind == "range":
        return [window_quantile(end - 3, end) for end in range(4, poll + 1, 4)]
    value = window_quantile(max(1, poll - 3), poll)
    return None if math.isnan(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per cell when v2 = v1")
    parser.add_argument("--detect-runs", type=int, default=200, help="runs per cell for detection")
    parser.add_argument("--quick", action="store_true", help="100 and 40 runs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.detect_runs = 100, 40
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"# {RPM:,} requests/min, stable error rate {STABLE_ERROR:.0%}, bake {BAKE / 60:g} min, polls every {POLL:g}s"
    )
    print(
        f"# false rollbacks over {args.runs} runs; median time to FAIL over {args.detect_runs} runs (detected share)\n"
    )
    header = (
        "| judge | weight | false rollbacks (v2 = v1) | "
        + " | ".join(s.name for s in SCENARIOS[1:])
        + " |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for setup in SETUPS:
        for weight in (0.01, 0.10, 0.50):
            cells = []
            for scenario in SCENARIOS:
                runs = args.runs if scenario is SCENARIOS[0] else args.detect_runs
                times = [run_once(rng, setup, weight, scenario) for _ in range(runs)]
                fails = [t for t in times if t is not None]
                if scenario is SCENARIOS[0]:
                    cells.append(f"{len(fails) / runs:.1%} ({len(fails)}/{runs})")
                    continue
                detected = len(fails) / runs
                if detected < 0.5:
                    cells.append(f"not within 10 min ({detected:.0%})")
                else:
                    median = float(np.median([t if t is not None else math.inf for t in times]))
                    cells.append(f"{median / 60:.2g} min ({detected:.0%})")
            print(f"| {setup.label} | {weight:.0%} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n# {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
