"""``make demo``: the example rollout DAG on the local mesh, with real model servers, load and Prometheus.

Starts the local stack (mesh, Istio CRDs, model-v1, Prometheus, steady load), runs the
``canary_rollout`` DAG with ``airflow dags test`` and short bake times, and prints a table as
it goes: the canary weight (and the mirror of the shadow phase), requests, error rate and p99
per version from Prometheus, and the shadow phase's and each step's verdict. ``--canary bad``
(and its variants) deploys a worse model-v2 and shows the detection and the rollback with its
reason; ``--canary bad-model`` is stopped in the shadow phase, and the closing lines show from
Istio telemetry that no live request reached model-v2. ``--router gateway-api`` runs the same DAG on a
Gateway API HTTPRoute (Services model-v1 and model-v2) instead of an Istio VirtualService, with
the mesh's built-in Gateway API CRDs (or those of ``$CANARY_GATEWAY_API_CRDS``). Every process
stops on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from airflow_canary.local.tools.stack import REPO, LocalStack, StackConfig, StackError
from airflow_canary.routing.router import Router, RouterKind, router_for

#: what each ``--canary`` choice sets in the DAG's params
CANARIES: dict[str, dict[str, Any]] = {
    "good": {},
    "bad": {"v2_error_rate": 0.10},
    "bad-model": {"model_quality": "bad"},
    "slow": {"v2_extra_latency_ms": 400},
}
#: the example DAG's default weight steps (the demo does not change them)
STEPS = [1, 10, 50, 100]
VERDICT_LINE = re.compile(
    r"Canary (?P<canary>\S+) vs (?P<stable>\S+) in \S+: (?P<verdict>PASS|FAIL|INCONCLUSIVE) "
    r"after (?P<polls>\d+) polls - (?P<reason>.*?)(?: \[airflow\.[^\]]*\] loc=\S+)?$",
    re.MULTILINE,
)
#: the shadow phase's final verdict (the sensor logs every poll; a poll still judging is skipped)
SHADOW_LINE = re.compile(
    r"Shadow analysis (?P<verdict>PASS|FAIL|INCONCLUSIVE): (?!judging for )"
    r"(?P<reason>.*?)(?: \[airflow\.[^\]]*\] loc=\S+)?$",
    re.MULTILINE,
)
#: an example pair the shadow sensor logs with a FAIL: both versions' predictions
SHADOW_EXAMPLE_LINE = re.compile(
    r"(?P<check>[\w.-]+): request (?P<request>\S+): v1 (?P<stable>\{.*?\}), v2 (?P<canary>\{.*?\})"
    r"(?: \[airflow\.[^\]]*\] loc=\S+)?$",
    re.MULTILINE,
)
#: a shadow verdict's reason and, in parentheses at its end, how the records paired
SHADOW_PAIRING = re.compile(r"(?P<reason>.*) \((?P<pairing>[\d,]+ pair\(s\) of .*)\)$")
RUN_FINISHED_LINE = re.compile(r"DagRun Finished: .*?, state=(\w+)")
#: the exception that ends a rolled-back run (not the source line a traceback quotes)
ROLLED_BACK_LINE = re.compile(
    r"AirflowFailException: (?P<reason>Canary (?:rolled back|rollout failed|stopped before).*)$",
    re.MULTILINE,
)


@dataclass
class Row:
    elapsed: float
    step: str
    weight: str
    rps: dict[str, float]
    errors: dict[str, float]
    p99: dict[str, float]
    verdict: str


def _by_version(stack: LocalStack, promql: str) -> dict[str, float]:
    try:
        result = stack.query(promql)
    except Exception:
        return {}
    values = {}
    for series in result:
        value = float(series["value"][1])
        if value == value:  # NaN when a version had no requests in the window
            values[series["metric"].get("destination_version", "?")] = value
    return values


def _router(stack: LocalStack) -> Router:
    if stack.config.router == "gateway-api":
        return router_for("gateway-api", stable="model-v1", canary="model-v2")
    return router_for("istio")


def _traffic(stack: LocalStack) -> tuple[str, str]:
    """The step the canary weight stands at and the split, read from the route object."""
    router = _router(stack)
    try:
        route = stack.route()
        split = router.read_split(route)
    except Exception as err:  # shown in the table; the DAG run reports real failures
        return "?", f"unreadable: {err}"[:22]
    weight = split.canary_percent
    mirror = router.mirror_percent(route)
    step = f"{STEPS.index(int(weight)) + 1}/{len(STEPS)}" if weight in STEPS else "-"
    if mirror:
        step = "shadow"
    text = " ".join(f"{k}={v}%" for k, v in split.as_dict().items() if v)
    if mirror:
        text += f" +mirror {mirror:g}%"
    return step, text + (" +header" if router.header_routes(route) else "")


def sample(stack: LocalStack, started: float, verdict: str) -> Row:
    window = "10s"
    rps = _by_version(
        stack,
        f'sum by (destination_version) (rate(istio_requests_total{{reporter="destination"}}[{window}]))',
    )
    bad = _by_version(
        stack,
        f'sum by (destination_version) (rate(istio_requests_total{{reporter="destination",response_code=~"5.."}}[{window}]))',
    )
    p99 = _by_version(
        stack,
        "histogram_quantile(0.99, sum by (le, destination_version) "
        f'(rate(istio_request_duration_milliseconds_bucket{{reporter="destination"}}[{window}])))',
    )
    errors = {v: (bad.get(v, 0.0) / r if r > 0 else 0.0) for v, r in rps.items()}
    step, traffic = _traffic(stack)
    return Row(time.monotonic() - started, step, traffic, rps, errors, p99, verdict)


def _fmt(values: dict[str, float], fmt: str) -> str:
    return " ".join(f"{v}:{fmt.format(values[v])}" for v in sorted(values)) or "-"


def print_header() -> None:
    print(
        f"{'time':>6}  {'step':<6} {'traffic':<22} {'req/s':<20} {'errors':<20} {'p99 ms':<20} last verdict",
        flush=True,
    )


def print_row(row: Row) -> None:
    print(
        f"{row.elapsed:5.0f}s  {row.step:<6} {row.weight:<22} {_fmt(row.rps, '{:.0f}'):<20} "
        f"{_fmt(row.errors, '{:.1%}'):<20} {_fmt(row.p99, '{:.0f}'):<20} {row.verdict}",
        flush=True,
    )


def airflow_env(
    stack: LocalStack, home: Path, bake_seconds: int, poll_seconds: float
) -> dict[str, str]:
    return {
        **os.environ,
        **stack.connection_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # ``dags test`` runs triggers in-process: no executor whose report of a deferral
        # could race the trigger's event (airflow_canary/triggers/settle.py)
        "AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS": "0",
        "CANARY_BAKE_TIME_SECONDS": str(bake_seconds),
        "CANARY_POLL_INTERVAL_SECONDS": str(poll_seconds),
        "CANARY_ROUTER": stack.config.router,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def verdicts_in(text: str) -> list[tuple[str, str]]:
    """(phase, "STATUS: reason") of every final verdict in a run's log, in order: the shadow
    phase's (``shadow``) and each weight step's (``step``)."""
    found = [(m.start(), "shadow", m) for m in SHADOW_LINE.finditer(text)]
    found += [(m.start(), "step", m) for m in VERDICT_LINE.finditer(text)]
    return [(phase, f"{m['verdict']}: {m['reason']}") for _, phase, m in sorted(found)]


def last_verdict(verdicts: list[tuple[str, str]]) -> str:
    """``shadow phase PASS`` or ``step 2 FAIL``: the newest verdict of :func:`verdicts_in`,
    named by its phase (the reasons are printed whole at the end), or "" before the first."""
    if not verdicts:
        return ""
    phase, verdict = verdicts[-1]
    steps = sum(1 for p, _ in verdicts if p == "step")
    label = "shadow phase" if phase == "shadow" else f"step {steps}"
    return f"{label} {verdict.partition(': ')[0]}"


def print_verdicts(verdicts: list[tuple[str, str]], text: str) -> None:
    """Each verdict with its reason split into lines; a shadow FAIL with its example pairs."""
    print("\ndemo: verdicts, step by step:")
    step = 0
    for phase, verdict in verdicts:
        status, _, reason = verdict.partition(": ")
        if phase == "shadow":
            label = "shadow phase"
        else:
            step += 1
            label = f"step {step}"
        print(f"  {label}: {status}")
        pairing = SHADOW_PAIRING.match(reason) if phase == "shadow" else None
        if pairing:
            reason = pairing["reason"]
        for part in reason.split("; "):
            print(f"      {part}")
        if pairing:
            print(f"      records: {pairing['pairing']}")
        if phase == "shadow" and status == "FAIL":
            for example in list(SHADOW_EXAMPLE_LINE.finditer(text))[:3]:
                print(
                    f"      e.g. request {example['request']}: "
                    f"v1 {example['stable']}, v2 {example['canary']}"
                )


def canary_requests(stack: LocalStack, version: str = "v2") -> dict[str, float]:
    """Requests to ``version`` since the stack started, per Istio ``reporter``: ``source`` (a
    caller's sidecar sent it: live traffic) and ``destination`` (its own sidecar received it,
    mirrored copies included)."""
    counts = {"source": 0.0, "destination": 0.0}
    for series in stack.query(
        f'sum by (reporter) (istio_requests_total{{destination_version="{version}"}})'
    ):
        counts[series["metric"].get("reporter", "?")] = float(series["value"][1])
    return counts


def run_demo(
    canary: str,
    state_dir: Path,
    bake_seconds: int,
    rps: float,
    router: str = "istio",
    shadow_seconds: int = 20,
) -> int:
    conf = {
        "bake_time_seconds": bake_seconds,
        "shadow_duration_seconds": shadow_seconds,
        **CANARIES[canary],
    }
    print(
        f"demo: canary '{canary}' ({json.dumps(CANARIES[canary]) if CANARIES[canary] else 'a good model-v2'}); state in {state_dir}"
    )
    print("demo: starting the local mesh, model-v1, Prometheus and load ...", flush=True)
    print(f"demo: router {router}")
    with LocalStack(StackConfig(state_dir=state_dir, rps=rps, router=router)) as stack:
        print(
            f"demo: mesh data plane {stack.data_url}, Prometheus {stack.prometheus_url}, kubeconfig {stack.kubeconfig}"
        )
        home = state_dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        env = airflow_env(stack, home, bake_seconds, poll_seconds=2.0)
        airflow = [sys.executable, "-m", "airflow"]
        subprocess.run(
            [*airflow, "db", "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        log_path = state_dir / "logs" / "dag-run.log"
        print(
            f"demo: airflow dags test canary_rollout -c '{json.dumps(conf)}' (log: {log_path})\n",
            flush=True,
        )
        print_header()
        started = time.monotonic()
        verdicts: list[tuple[str, str]] = []
        with log_path.open("wb") as log:
            run = subprocess.Popen(
                [*airflow, "dags", "test", "canary_rollout", "-c", json.dumps(conf)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                last: tuple[str, str] | None = None
                last_printed = 0.0
                while run.poll() is None:
                    time.sleep(2)
                    verdicts = verdicts_in(log_path.read_text(errors="replace"))
                    row = sample(stack, started, last_verdict(verdicts))
                    # a row when traffic moves or a verdict arrives, else every 10 s
                    if (row.weight, row.verdict) != last or row.elapsed - last_printed >= 10:
                        print_row(row)
                        last, last_printed = (row.weight, row.verdict), row.elapsed
            finally:
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGTERM)
                    run.wait(timeout=30)
        text = log_path.read_text(errors="replace")
        verdicts = verdicts_in(text)
        print_row(sample(stack, started, last_verdict(verdicts)))
        finished = RUN_FINISHED_LINE.findall(text)
        succeeded = bool(finished) and finished[-1] == "success"
        print_verdicts(verdicts, text)
        rolled_back = ROLLED_BACK_LINE.search(text)
        if rolled_back:
            print(f"\ndemo: {rolled_back['reason']}")
        print(f"\ndemo: DAG run {'succeeded: model-v2 promoted' if succeeded else 'failed'}")
        time.sleep(2 * stack.config.scrape_interval_seconds)  # the last requests scraped
        v2 = canary_requests(stack)
        print(
            f"demo: Istio telemetry, requests to model-v2: {v2['source']:,.0f} sent by a "
            f'caller\'s sidecar (reporter="source": live requests), {v2["destination"]:,.0f} '
            f'received by its own (reporter="destination": live and mirrored)'
        )
        route = stack.route()
        print(f"\ndemo: final {route['kind']}:")
        print(
            yaml.safe_dump({k: route[k] for k in ("apiVersion", "kind", "spec")}, sort_keys=False)
        )
        expected_success = canary == "good"
        if succeeded != expected_success:
            print(
                f"demo: unexpected outcome for canary '{canary}'; see {log_path}", file=sys.stderr
            )
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_canary.demo", description=__doc__)
    parser.add_argument(
        "--canary", choices=sorted(CANARIES), default="good", help="which model-v2 to roll out"
    )
    parser.add_argument(
        "--router",
        choices=[k.value for k in RouterKind],
        default="istio",
        help="traffic backend: an Istio VirtualService, or a Gateway API HTTPRoute",
    )
    parser.add_argument("--bake-seconds", type=int, default=30, help="bake time of each step")
    parser.add_argument(
        "--shadow-seconds",
        type=int,
        default=20,
        help="how long the shadow phase judges model-v2 on mirrored requests",
    )
    parser.add_argument("--rps", type=float, default=200.0, help="steady load on model-service")
    parser.add_argument("--state-dir", type=Path, default=None, help="where to keep logs and state")
    args = parser.parse_args(argv)
    state_dir = args.state_dir or Path(
        tempfile.mkdtemp(
            prefix="canary-demo-",
            dir=REPO / ".state" if (REPO / ".state").is_dir() or _mkdir(REPO / ".state") else None,
        )
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run_demo(
            args.canary,
            state_dir,
            args.bake_seconds,
            args.rps,
            args.router,
            args.shadow_seconds,
        )
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything stopped", file=sys.stderr)
        return 130
    except (StackError, subprocess.CalledProcessError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1


def _mkdir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
