"""Plan-time power against the judge's measured detection rate, on simulated Istio counters.

Not a test. For each step weight and bake time, the rollout plan predicts with
``airflow_canary.analysis.power.step_power`` the probability that the step catches a canary
at twice the error check's ``max_ratio`` (errors 1% -> 3% with ``max_ratio=1.5``); this
script then runs the product's judge (three checks, a third of alpha 0.01, 15 s polls) on
simulated counters of such a canary, as ``benchmarks/decision_quality.py`` does, and counts
how often the step FAILs within its bake. Usage:

    .venv/bin/python benchmarks/plan_power.py [--runs 200]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import benchmarks.decision_quality as dq
from airflow_canary.analysis import make_judge
from airflow_canary.analysis.power import ServiceRates, step_power

CELLS = [(0.01, 300.0), (0.01, 600.0), (0.10, 60.0), (0.10, 120.0), (0.50, 30.0)]


def measured(weight: float, bake: float, runs: int, seed: int) -> float:
    setup = dq.SETUPS[0]
    scenario = dq.Scenario("2x max_ratio", weight, canary_error=3 * dq.STABLE_ERROR)
    rng = np.random.default_rng(seed)
    caught = 0
    for _ in range(runs):
        canary, stable = dq.simulate_step(rng, scenario, weight, regress=True)
        failed_at = dq.run_analysis(setup, canary, stable, False, 1 / len(dq.STEPS))
        caught += failed_at is not None and failed_at <= bake
    return caught / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    judge = make_judge("sequential", alpha=dq.ALPHA, budget_share=1 / len(dq.STEPS))
    assert judge.name == "sequential"
    service = ServiceRates(dq.RPM / 60, dq.STABLE_ERROR)
    rates = {c.name: service for c in dq.PRODUCT_CHECKS}
    started = time.monotonic()
    print(f"machine: {platform.machine()}, {platform.python_version()}; runs per cell {args.runs}")
    print("| weight | bake | canary requests | predicted at plan time | measured (95% CI) |")
    print("|---|---|---|---|---|")
    for i, (weight, bake) in enumerate(CELLS):
        plan = [
            p
            for p in step_power(
                judge,  # type: ignore[arg-type]
                list(dq.PRODUCT_CHECKS),
                rates,
                round(weight * 100),
                bake,
                dq.POLL,
            )
            if p.check == "error-rate"
        ]
        got = measured(weight, bake, args.runs, seed=i)
        low, high = dq.wilson(round(got * args.runs), args.runs)
        print(
            f"| {weight:.0%} | {bake / 60:g} min | {plan[0].canary_events:,.0f} | "
            f"{plan[0].power:.2f} | {got:.2f} ({low:.2f}-{high:.2f}) |"
        )
    print(f"\n{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
