"""Decision quality of the judges on simulated Istio counters: false rollbacks and time to detect.

Not a test. Simulates 10,000 requests/min (stable error rate 1%, lognormal latency with
p99 ~200 ms, 10% of requests get feedback with 90% correct predictions), generates the
cumulative counters and histogram buckets Prometheus would return at each 15 s poll of a
10-minute bake, and feeds them to the real judges through ``CanaryAnalysis``; ``savvi``'s
anytime-valid multinomial test (Lindon & Malek 2022) runs on the same counts as an
independent implementation. Usage:

    .venv/bin/python benchmarks/decision_quality.py [--runs 300] [--detect-runs 60] [--quick]

Rows: A/A false rollbacks per rollout (3 checks, steps 1/10/50, each a 10-minute bake),
with independent errors and with bursty errors (clusters of mean size 3, geometric), with
95% Wilson intervals; then the median and p90 time to FAIL for each regression.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
    ModelAccuracyCheck,
    Status,
)

RPM = 10_000
STABLE_ERROR = 0.01
FEEDBACK_SHARE, WRONG = 0.10, 0.10
LAT_MEDIAN_MS, LAT_SIGMA = 50.0, 0.596  # p99 = 50 * exp(2.326 * 0.596) ~ 200 ms
BAKE, POLL = 600.0, 15.0
SLICES = int(BAKE / POLL) + 1
ARMS = Arms("default")
BOUNDS = np.array(ISTIO_DURATION_BUCKETS_MS)
LE = [f"{b:g}" for b in ISTIO_DURATION_BUCKETS_MS] + ["+Inf"]
ALPHA = 0.01
STEPS = (0.01, 0.10, 0.50)


@dataclass(frozen=True)
class Scenario:
    name: str
    weight: float = 0.01
    canary_error: float = STABLE_ERROR
    latency_factor: float = 1.0
    tail_share: float = 0.0  # share of canary requests slowed by tail_factor
    tail_factor: float = 1.0
    grpc: bool = False  # errors are gRPC status 14 on HTTP 200: 5xx queries do not see them
    cluster: float = 1.0  # mean error cluster size (1 = independent)


DETECT = [
    Scenario("errors 1%->5% at 1%", 0.01, canary_error=0.05),
    Scenario("errors 1%->2% at 10%", 0.10, canary_error=0.02),
    Scenario("latency x1.5 at 1%", 0.01, latency_factor=1.5),
    Scenario("latency x1.5 at 10%", 0.10, latency_factor=1.5),
    Scenario("tail: 2% of requests x6 at 10%", 0.10, tail_share=0.02, tail_factor=6.0),
    Scenario("gRPC errors 1%->5% at 10%", 0.10, canary_error=0.05, grpc=True),
]


def bucket_probabilities(factor: float, tail_share: float = 0.0, tail_factor: float = 1.0):
    """P(latency <= bound) per Istio bound, lognormal scaled by factor, a tail mixture."""
    body = stats.lognorm.cdf(BOUNDS, s=LAT_SIGMA, scale=LAT_MEDIAN_MS * factor)
    if not tail_share:
        return body
    tail = stats.lognorm.cdf(BOUNDS, s=LAT_SIGMA, scale=LAT_MEDIAN_MS * factor * tail_factor)
    return (1 - tail_share) * body + tail_share * tail


def errors_in(rng: np.random.Generator, requests: np.ndarray, rate: float, cluster: float):
    """Bad events per slice: independent, or clusters (geometric sizes of mean ``cluster``)."""
    if cluster <= 1:
        return rng.binomial(requests, rate)
    clusters = rng.poisson(requests * rate / cluster)
    sizes = np.array([rng.geometric(1 / cluster, c).sum() if c else 0 for c in clusters])
    return np.minimum(sizes, requests)


def simulate_arm(rng, share, error, factor, cluster, tail_share=0.0, tail_factor=1.0, counted=None):
    """One arm's per-slice counts; ``counted`` gives (requests, errors) made elsewhere."""
    if counted is None:
        requests = rng.poisson(RPM / 4 * share, SLICES)
        errors = errors_in(rng, requests, error, cluster)
    else:
        requests, errors = counted
    probs = np.diff(
        np.concatenate([[0.0], bucket_probabilities(factor, tail_share, tail_factor), [1.0]])
    )
    buckets = np.cumsum(rng.multinomial(requests, probs)[:, :-1], axis=1)
    feedback = rng.binomial(requests, FEEDBACK_SHARE)
    wrong = rng.binomial(feedback, WRONG)
    return {
        "requests": requests,
        "errors": errors,
        "buckets": buckets,
        "feedback": feedback,
        "wrong": wrong,
    }


def simulate_step(rng, scenario: Scenario, weight: float, regress: bool):
    """Both arms of one step; the canary regresses as ``scenario`` says when ``regress``."""
    s = scenario if regress else Scenario("A/A", cluster=scenario.cluster)
    canary = simulate_arm(
        rng, weight, s.canary_error, s.latency_factor, s.cluster, s.tail_share, s.tail_factor
    )
    stable = simulate_arm(rng, 1 - weight, STABLE_ERROR, 1.0, s.cluster)
    return canary, stable


#: A/A with a burst of errors both arms see (a shared dependency failing for 20 s), read
#: with each arm's counters scraped at its own time (``reporter="destination"``: the canary's
#: and stable's pods are different scrape targets) or at one time (``reporter="source"``:
#: each caller's sidecar exports both arms' series in one scrape).
BURST_SECONDS = 20
SHARED_BURSTS = (0.2, 0.5)


def shared_burst_step(rng, weight: float, burst_rate: float, aligned: bool):
    """Both arms of an A/A step with one shared error burst, as Prometheus would read them.

    Requests and errors are drawn per second; a burst of ``BURST_SECONDS`` at a random time
    raises both arms' error rate to ``burst_rate``. Each arm's counter at poll k is its
    cumulative count at its last scrape, ``k * POLL - offset``; the offsets are independent
    uniform draws in [0, POLL) unless ``aligned``.
    """
    seconds = int(BAKE) + int(POLL)
    start = rng.integers(int(POLL), int(BAKE) - BURST_SECONDS)
    rate = np.full(seconds, STABLE_ERROR)
    rate[start : start + BURST_SECONDS] = burst_rate
    offsets = rng.uniform(0, POLL, 2)
    if aligned:
        offsets[1] = offsets[0]
    arms = []
    for share, offset in ((weight, offsets[0]), (1 - weight, offsets[1])):
        per_second = rng.poisson(RPM / 60 * share, seconds)
        bad = rng.binomial(per_second, rate)
        # cumulative count at each poll's last scrape (offset seconds before the poll)
        at = np.clip((np.arange(SLICES) * POLL - offset).astype(int), 0, seconds)
        cum_requests = np.concatenate([[0], np.cumsum(per_second)])[at]
        cum_bad = np.concatenate([[0], np.cumsum(bad)])[at]
        counted = (np.diff(cum_requests, prepend=0), np.diff(cum_bad, prepend=0))
        arms.append(simulate_arm(rng, share, STABLE_ERROR, 1.0, 1.0, counted=counted))
    return arms[0], arms[1]


# -- judges on the product's analysis --------------------------------------------------


@dataclass(frozen=True)
class AnalysisSetup:
    label: str
    judge: str
    checks: tuple[Check, ...]
    poll: float = POLL
    options: tuple[tuple[str, object], ...] = ()
    counts_grpc: bool = True
    rollout_budget: bool = False  # the product splits alpha over the rollout's steps


PRODUCT_CHECKS = (
    ErrorRateCheck(max_ratio=1.5),
    LatencyCheck(quantile=0.99, max_ratio=1.5),
    ModelAccuracyCheck(max_drop=0.02),
)
SETUPS = [
    AnalysisSetup(
        "product (sequential, alpha 0.01 per rollout)",
        "sequential",
        PRODUCT_CHECKS,
        options=(("alpha", ALPHA),),
        rollout_budget=True,
    ),
    AnalysisSetup(
        "Flagger-style (1m, 5 failed, success >= 98%, p99 <= 500 ms)",
        "threshold",
        (
            ErrorRateCheck(max_rate=0.02, grpc_error_codes=()),
            LatencyCheck(quantile=0.99, max_ms=500),
            ModelAccuracyCheck(max_drop=0.02),
        ),
        poll=60.0,
        options=(("failure_threshold", 5), ("window_seconds", 60.0)),
        counts_grpc=False,
    ),
    AnalysisSetup(
        "Argo-style (1m, failureLimit 3, success >= 98%, p99 <= 300 ms)",
        "threshold",
        (
            ErrorRateCheck(max_rate=0.02, grpc_error_codes=()),
            LatencyCheck(quantile=0.99, max_ms=300),
            ModelAccuracyCheck(max_drop=0.02),
        ),
        poll=60.0,
        options=(("failure_threshold", 3), ("window_seconds", 60.0)),
        counts_grpc=False,
    ),
    AnalysisSetup(
        "Kayenta-style Mann-Whitney (98%, 25% band, 1-min points)",
        "mann_whitney",
        (
            ErrorRateCheck(max_ratio=1.25, grpc_error_codes=()),
            LatencyCheck(quantile=0.99, max_ratio=1.25),
            ModelAccuracyCheck(max_drop=0.02),
        ),
        counts_grpc=False,
    ),
]


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


def run_analysis(
    setup: AnalysisSetup, canary: dict, stable: dict, grpc: bool, budget_share: float
) -> float | None:
    """Seconds until a final FAIL, or None when the step passed or never decided."""
    cum: dict[str, np.ndarray] = {}
    for arm, data in (("canary", canary), ("stable", stable)):
        requests = np.cumsum(data["requests"])
        errors = np.cumsum(data["errors"])
        if grpc and not setup.counts_grpc:
            errors = np.zeros_like(errors)  # a 5xx query cannot see gRPC failures on HTTP 200
        cum[f"error-rate/{arm}.total"] = requests
        cum[f"error-rate/{arm}.bad"] = errors
        cum[f"latency/{arm}.total"] = requests
        cum[f"latency/{arm}.buckets"] = np.cumsum(data["buckets"], axis=0)
        cum[f"accuracy/{arm}.total"] = np.cumsum(data["feedback"])
        cum[f"accuracy/{arm}.bad"] = np.cumsum(data["wrong"])
    cum["error-rate/canary.unreachable"] = np.zeros(SLICES)
    options = dict(setup.options)
    if setup.rollout_budget:
        options["budget_share"] = budget_share
    analysis = CanaryAnalysis(
        ARMS, setup.checks, setup.judge, BAKE, setup.poll, judge_options=options
    )
    per_poll = int(round(setup.poll / POLL))
    for poll in range(0, SLICES, per_poll):
        elapsed = poll * POLL
        samples: dict[str, object] = {}
        for query in analysis.plan(elapsed):
            series = cum.get(query.id)
            if query.kind == "vector" and series is not None:
                finite = dict(zip(LE[:-1], (float(v) for v in series[poll]), strict=True))
                total = float(cum[query.id.replace("buckets", "total")][poll])
                samples[query.id] = {**finite, "+Inf": total}
            elif series is not None:
                samples[query.id] = float(series[poll])
            else:
                samples[query.id] = value_sample(query.id, query.kind, canary, stable, poll, setup)
        verdict = analysis.observe(elapsed, samples)
        if verdict.final:
            return elapsed if verdict.status is Status.FAIL else None
    return None


def value_sample(qid: str, kind: str, canary: dict, stable: dict, poll: int, setup) -> object:
    """What Prometheus would answer to a quantile query: over the last minute, or per minute."""
    data = canary if "/canary." in qid else stable
    if qid.startswith("accuracy/"):
        return None
    check = next(c for c in setup.checks if qid.startswith(c.name + "/"))
    quantile = float(getattr(check, "quantile", 0.99))

    def window_quantile(first: int, last: int) -> float:
        total = float(data["requests"][first : last + 1].sum())
        return histogram_quantile(quantile, data["buckets"][first : last + 1].sum(axis=0), total)

    if kind == "range":
        return [window_quantile(end - 3, end) for end in range(4, poll + 1, 4)]
    value = window_quantile(max(1, poll - 3), poll)
    return None if math.isnan(value) else value


# -- savvi ---------------------------------------------------------------------------------


def run_savvi(canary: dict, stable: dict, grpc: bool, budget_share: float) -> float | None:
    """savvi's Multinomial (Dirichlet-multinomial e-process, Lindon & Malek 2022) on the
    canary's share of bad events against its traffic share, for errors and for requests
    slower than 250 ms; Bonferroni over the two, the same split of alpha over steps."""
    from savvi.multinomial import Multinomial

    alpha = ALPHA * budget_share / 2
    slo = int(np.searchsorted(BOUNDS, 250))
    c_req, s_req = canary["requests"].sum(), stable["requests"].sum()
    share = float(c_req / (c_req + s_req))
    theta = np.array([share, 1 - share])
    errors = Multinomial(alpha, theta)
    slow = Multinomial(alpha, theta)
    for i in range(1, SLICES):
        errors.update(np.array([canary["errors"][i], stable["errors"][i]], dtype=np.int64))
        slow_c = canary["requests"][i] - canary["buckets"][i, slo]
        slow_s = stable["requests"][i] - stable["buckets"][i, slo]
        slow.update(np.array([slow_c, slow_s], dtype=np.int64))
        worse = errors.counts[0] / max(share, 1e-9) > errors.counts[1] / (1 - share)
        slower = slow.counts[0] / max(share, 1e-9) > slow.counts[1] / (1 - share)
        if (worse and errors.odds >= 1 / alpha) or (slower and slow.odds >= 1 / alpha):
            return i * POLL
    return None


# -- the table ------------------------------------------------------------------------------

Runner = Callable[[dict, dict, bool, float], "float | None"]


def runner(label: str) -> Runner:
    if label == "savvi":
        return run_savvi
    setup = next(s for s in SETUPS if s.label == label)
    return lambda c, s, grpc, share: run_analysis(setup, c, s, grpc, share)


def aa_rollouts(args: tuple[str, float, int, int]) -> list[list[bool]]:
    """Per rollout of identical versions: did each step (1%, 10%, 50%) FAIL?"""
    label, cluster, runs, seed = args
    run = runner(label)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        fails = []
        for weight in STEPS:
            c, s = simulate_step(rng, Scenario("A/A", cluster=cluster), weight, regress=False)
            fails.append(run(c, s, False, 1 / len(STEPS)) is not None)
        out.append(fails)
    return out


def shared_burst_rollouts(args: tuple[str, float, bool, int, int]) -> list[bool]:
    """Per A/A rollout with one shared error burst per step: did any step FAIL?"""
    label, burst_rate, aligned, runs, seed = args
    run = runner(label)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        failed = False
        for weight in STEPS:
            c, s = shared_burst_step(rng, weight, burst_rate, aligned)
            failed = failed or run(c, s, False, 1 / len(STEPS)) is not None
        out.append(failed)
    return out


def detections(args: tuple[str, Scenario, int, int]) -> list[float | None]:
    label, scenario, runs, seed = args
    run = runner(label)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        c, s = simulate_step(rng, scenario, scenario.weight, regress=True)
        out.append(run(c, s, scenario.grpc, 1 / len(STEPS)))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_cell(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{k / n:.1%} ({k}/{n}; {low:.1%}-{high:.1%})"


def time_cell(times: list[float | None]) -> str:
    found = sorted(t for t in times if t is not None)
    share = len(found) / len(times)
    if share < 0.5:
        return f"not within 10 min ({share:.0%})"
    padded = sorted(t if t is not None else math.inf for t in times)
    median = padded[len(padded) // 2]
    p90 = padded[min(len(padded) - 1, int(math.ceil(0.9 * len(padded))) - 1)]
    p90_text = f"{p90 / 60:.2g}" if math.isfinite(p90) else ">10"
    return f"{median / 60:.2g} / {p90_text} min ({share:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="A/A rollouts per cell")
    parser.add_argument("--detect-runs", type=int, default=60, help="runs per detection cell")
    parser.add_argument("--quick", action="store_true", help="40 and 20 runs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--judges", nargs="*", help="labels to run (default: all)")
    parser.add_argument(
        "--tables",
        nargs="*",
        choices=("aa", "burst", "detect"),
        default=("aa", "burst", "detect"),
        help="which tables: A/A false rollbacks, A/A with a shared burst, time to detect",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.detect_runs = 40, 20
    labels = [s.label for s in SETUPS] + ["savvi"]
    if args.judges:
        labels = [label for label in labels if any(j in label for j in args.judges)]
    started = time.perf_counter()
    print(
        f"# {RPM:,} requests/min, stable error rate {STABLE_ERROR:.0%}, bake {BAKE / 60:g} min, "
        f"polls every {POLL:g}s; {args.runs} A/A rollouts (steps 1/10/50%) and "
        f"{args.detect_runs} runs per detection cell; seed {args.seed}\n"
    )
    chunks = max(1, args.workers)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        print(
            "| judge | A/A rollback per rollout, independent errors | bursty errors (clusters of 3) | A/A per step 1% / 10% (bursty) |"
        )
        print("|---|---|---|---|")
        for label in labels if "aa" in args.tables else []:
            cells = []
            per_step = ""
            for cluster in (1.0, 3.0):
                jobs = [
                    (label, cluster, args.runs // chunks + (i < args.runs % chunks), args.seed + i)
                    for i in range(chunks)
                ]
                results = [r for part in pool.map(aa_rollouts, jobs) for r in part]
                cells.append(rate_cell(sum(any(r) for r in results), len(results)))
                if cluster > 1:
                    n = len(results)
                    per_step = " / ".join(f"{sum(r[i] for r in results) / n:.1%}" for i in range(2))
            print(f"| {label} | {cells[0]} | {cells[1]} | {per_step} |", flush=True)
        print()
        bursts = [(rate, aligned) for rate in SHARED_BURSTS for aligned in (False, True)]
        print(
            f"| judge (A/A, one shared {BURST_SECONDS} s error burst per step) | "
            + " | ".join(
                f"{rate:.0%} errors, arms scraped {'together' if aligned else 'apart'}"
                for rate, aligned in bursts
            )
            + " |"
        )
        print("|---|" + "---|" * len(bursts))
        for label in labels if "burst" in args.tables else []:
            cells = []
            for rate, aligned in bursts:
                jobs = [
                    (
                        label,
                        rate,
                        aligned,
                        args.runs // chunks + (i < args.runs % chunks),
                        args.seed * 1000 + i,
                    )
                    for i in range(chunks)
                ]
                results = [r for part in pool.map(shared_burst_rollouts, jobs) for r in part]
                cells.append(rate_cell(sum(results), len(results)))
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        print()
        print("| judge | " + " | ".join(s.name for s in DETECT) + " |")
        print("|---|" + "---|" * len(DETECT))
        for label in labels if "detect" in args.tables else []:
            cells = []
            for k, scenario in enumerate(DETECT):
                jobs = [
                    (
                        label,
                        scenario,
                        args.detect_runs // chunks + (i < args.detect_runs % chunks),
                        args.seed * 100 + k * 10 + i,
                    )
                    for i in range(chunks)
                ]
                times = [t for part in pool.map(detections, jobs) for t in part]
                cells.append(time_cell(times))
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print(
        "\n# cells: rate (count; 95% Wilson interval); median / p90 time to FAIL (share detected within 10 min)"
    )
    print(f"# {time.perf_counter() - started:.0f} s on {args.workers} worker(s)")


if __name__ == "__main__":
    main()
