"""Server-side HTML for the rollouts page: one card per rollout with an inline SVG weight chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from airflow_canary.plugins.model import (
    CheckResult,
    Outcome,
    Rollout,
    ShadowPairing,
    ShadowStep,
    Step,
)
from airflow_canary.timestamps import timestamp_or_none

_OUTCOME_LABEL = {
    Outcome.RUNNING: "Running",
    Outcome.PROMOTED: "Promoted",
    Outcome.ROLLED_BACK: "Rolled back",
    Outcome.FAILED: "Failed",
    Outcome.UNKNOWN: "Unknown",
}

_VERDICT_COLOUR = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700"}

_CSS = """
:root { color-scheme: light dark; --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --card:#fff;
  --bg:#f6f8fa; --pass:#1a7f37; --fail:#cf222e; --inc:#9a6700; --accent:#0969da; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6edf3; --muted:#9198a1; --line:#3d444d;
  --card:#151b23; --bg:#0d1117; --accent:#4493f8; } }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; padding: 16px 20px; }
h1 { font-size: 20px; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0 0 16px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.rollout { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; margin: 0 0 16px; }
.rollout > header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.rollout h2 { font-size: 16px; margin: 0; }
.run-id { color: var(--muted); font-family: ui-monospace, monospace; font-size: 12px; }
.badge { border-radius: 999px; padding: 1px 9px; font-size: 12px; font-weight: 600;
  border: 1px solid currentColor; }
.outcome-promoted { color: var(--pass); } .outcome-rolled_back, .outcome-failed { color: var(--fail); }
.outcome-running { color: var(--accent); } .outcome-unknown { color: var(--muted); }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 8px 0; }
.facts div { display: flex; gap: 6px; } .facts dt { color: var(--muted); } .facts dd { margin: 0; font-weight: 600; }
.rollback { border-left: 4px solid var(--fail); background: rgba(207,34,46,.08); padding: 6px 10px;
  margin: 8px 0; border-radius: 4px; }
.chart { width: 100%; max-width: 760px; height: auto; display: block; margin: 6px 0 10px; }
.chart text { fill: var(--muted); font-size: 11px; } .chart .grid { stroke: var(--line); }
.chart .weight { fill: none; stroke: var(--accent); stroke-width: 2.5; }
table { border-collapse: collapse; width: 100%; margin: 4px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.verdict { font-weight: 700; } .verdict-PASS { color: var(--pass); } .verdict-FAIL { color: var(--fail); }
.verdict-INCONCLUSIVE { color: var(--inc); } .verdict-none { color: var(--muted); font-weight: 400; }
.checks { margin: 2px 0 6px 0; font-size: 12px; } .checks td, .checks th { padding: 3px 8px; }
tr.check-row > td { padding-top: 0; }
.tasks { font-size: 12px; color: var(--muted); } .tasks a { margin-right: 10px; }
.approvals { background: #fff4d6; border: 1px solid #e6c65c; border-radius: 6px;
  padding: 6px 10px; margin: 8px 0; }
table.checks.live { border-left: 3px solid #e6c65c; }
.live-note { font-size: 12px; color: #6b5a1e; margin: 2px 0; }
tr.shadow > td:first-child { font-weight: 600; }
.pairing { font-size: 12px; margin: 4px 0; } .examples { font-size: 12px; }
.examples code { font-size: 11px; }
.missing { color: var(--inc); font-size: 12px; margin: 6px 0 0; padding-left: 18px; }
.empty { color: var(--muted); padding: 24px 0; }
"""


@dataclass(frozen=True)
class PageContext:
    """Who is looking and when, for the page header."""

    user: str
    generated_at: datetime
    limit: int
    refresh_seconds: int = 15


def render_page(
    rollouts: Sequence[Rollout], context: PageContext, notes: Sequence[str] = ()
) -> str:
    running = any(rollout.outcome is Outcome.RUNNING for rollout in rollouts)
    refresh = f'<meta http-equiv="refresh" content="{context.refresh_seconds}">' if running else ""
    cards = "\n".join(_card(rollout, context.generated_at) for rollout in rollouts)
    if not rollouts:
        cards = (
            '<p class="empty">No canary rollouts in the DAGs you may read. Runs appear here once a '
            "DAG built with <code>canary_rollout()</code> has run.</p>"
        )
    note_html = "".join(f'<p class="missing">{escape(note)}</p>' for note in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}
<title>Canary rollouts</title><style>{_CSS}</style></head>
<body>
<h1>Canary rollouts</h1>
<p class="sub">The {context.limit} most recent DAG runs with a canary rollout that
<strong>{escape(context.user)}</strong> may read, as of {escape(_clock(context.generated_at))} UTC.
{"Refreshes every " + str(context.refresh_seconds) + " s while a rollout is running. " if running else ""}<a href="rollouts">JSON</a></p>
{note_html}
{cards}
</body></html>
"""


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _short_time(text: str | None) -> str:
    moment = timestamp_or_none(text)
    return moment.strftime("%H:%M:%S") if moment is not None else "—"


def _card(rollout: Rollout, now: datetime) -> str:
    title = escape(rollout.dag_id) + (f" · {escape(rollout.group)}" if rollout.group else "")
    facts = [
        ("Stable", _version(rollout.stable_version, rollout.stable_subset)),
        ("Canary", _version(rollout.canary_version, rollout.canary_subset)),
        (
            "Steps",
            " → ".join(f"{w}%" for w in rollout.planned_steps) if rollout.planned_steps else "—",
        ),
        (
            "Canary weight" if rollout.outcome is Outcome.RUNNING else "Final canary weight",
            f"{rollout.current_weight}%" if rollout.current_weight is not None else "—",
        ),
        ("Routes", "; ".join(rollout.routes) or "—"),
        ("Run state", rollout.run_state or "—"),
        (
            "VirtualService",
            "/".join(x for x in (rollout.namespace, rollout.virtual_service) if x) or "—",
        ),
        ("Started", _short_time(rollout.start_date)),
        ("Ended", _short_time(rollout.end_date) if rollout.end_date else "—"),
    ]
    facts_html = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    rollback = ""
    if rollout.outcome is Outcome.ROLLED_BACK:
        reason = rollout.rollback_reason or "no reason recorded"
        rollback = f'<div class="rollback"><strong>Rolled back:</strong> {escape(reason)}</div>'
    tasks = " ".join(
        f'<a href="{escape(task.url)}" target="_top" title="{escape(task.state or "no state")}">'
        f"{escape(task.task_id)}</a>"
        for task in rollout.tasks
    )
    approvals = ""
    if rollout.pending_approvals:
        items = "".join(
            f'<li class="pending-approval" data-task-id="{escape(item.task_id)}">Step {item.step}'
            f"{f' ({item.weight}%)' if item.weight is not None else ''} waits for approval: "
            f'<a href="{escape(item.url)}" target="_top">answer in Airflow</a></li>'
            for item in rollout.pending_approvals
        )
        approvals = (
            f'<div class="approvals"><strong>Waiting for approval</strong><ul>{items}</ul></div>'
        )
    missing = ""
    if rollout.missing:
        items = "".join(f"<li>{escape(item)}</li>" for item in rollout.missing)
        missing = f'<ul class="missing" aria-label="missing data">{items}</ul>'
    outcome = rollout.outcome.value
    return f"""<section class="rollout" data-dag-id="{escape(rollout.dag_id)}" data-run-id="{escape(rollout.run_id)}">
<header><h2><a href="{escape(rollout.run_url)}" target="_top">{title}</a></h2>
<span class="run-id">{escape(rollout.run_id)}</span>
<span class="badge outcome-{outcome}">{_OUTCOME_LABEL[rollout.outcome]}</span></header>
<dl class="facts">{facts_html}</dl>
{approvals}
{rollback}
{weight_chart(rollout, now)}
{_steps_table(rollout.steps, rollout.shadow)}
<p class="tasks">Tasks: {tasks or "none recorded"}</p>
{missing}
</section>"""


def _version(version: str | None, subset: str | None) -> str:
    if version and subset and version != subset:
        return f"{version} (subset {subset})"
    return version or subset or "—"


def _weight(step: Step) -> str:
    return f"{step.weight}%" if step.weight is not None else "weight unknown"


def _steps_table(steps: Sequence[Step], shadow: ShadowStep | None = None) -> str:
    if not steps and shadow is None:
        return '<p class="empty">No weight steps recorded yet.</p>'
    rows: list[str] = _shadow_rows(shadow) if shadow is not None else []
    for step in steps:
        verdict = step.verdict or _pending(step)
        verdict_class = f"verdict-{step.verdict}" if step.verdict else "verdict-none"
        if step.live:
            # The poll's status so far is evidence, not a verdict: say so.
            verdict = f"analysing… poll {step.polls}" if step.polls is not None else "analysing…"
            verdict_class = "verdict-none live"
        detail = _judged(step.judge, step.polls, step.elapsed_seconds)
        links = [
            f'<a href="{escape(ref.url)}" target="_top">{escape(label)}</a>'
            for ref, label in ((step.set_weight, "weight task"), (step.analysis, "analysis task"))
            if ref is not None
        ]
        if step.approval_url:
            links.append(
                f'<a class="approve" href="{escape(step.approval_url)}" target="_top">answer approval</a>'
            )
        elif step.approval_answer:
            links.append(f'<span class="approval-answer">{escape(step.approval_answer)}</span>')
        links += [
            f'<a href="{escape(url)}" target="_blank" rel="noopener">{label}</a>'
            for url, label in (
                (step.prometheus_url, "Prometheus"),
                (step.dashboard_url, "Dashboard"),
            )
            if url
        ]
        window = (
            f"{_short_time(step.window_start)}–{_short_time(step.window_end)}"
            if step.window_start or step.window_end
            else "—"
        )
        weight_attr = f' data-weight="{step.weight}"' if step.weight is not None else ""
        rows.append(
            f'<tr class="step" data-step="{step.index}"{weight_attr}>'
            f'<td class="num">{step.index}</td><td class="num">{_weight(step)}</td>'
            f"<td>{_short_time(step.weight_set_at)}</td><td>{window}</td>"
            f'<td class="verdict {verdict_class}">{escape(verdict)}</td>'
            f"<td>{escape(step.reason or '')}</td><td>{escape(detail)}</td>"
            f"<td>{' · '.join(links)}</td></tr>"
        )
        if step.checks:
            live = ""
            if step.live:
                limits = "; ".join(f"{name}: {text}" for name, text in step.limits)
                live = (
                    f'<p class="live-note">Evidence so far (poll at {_short_time(step.live_at)} UTC), '
                    f"not a verdict. Limits: {escape(limits or 'see the analysis task')}</p>"
                )
            rows.append(
                f'<tr class="check-row"><td></td><td colspan="7">{live}'
                f"{_checks_table(step.checks, dict(step.limits), live=step.live)}</td></tr>"
            )
    head = (
        "<tr><th>Step</th><th>Weight</th><th>Set at</th><th>Window</th><th>Verdict</th><th>Reason</th>"
        "<th>Judge</th><th>Links</th></tr>"
    )
    return f'<table class="steps"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _judged(judge: str | None, polls: int | None, elapsed_seconds: float | None) -> str:
    """``sequential, 6 polls, 31 s``: how a verdict was reached, as far as it is known."""
    parts = (
        judge or "",
        f"{polls} polls" if polls is not None else "",
        f"{elapsed_seconds:.0f} s" if elapsed_seconds is not None else "",
    )
    return ", ".join(part for part in parts if part)


def _shadow_rows(shadow: ShadowStep) -> list[str]:
    """The shadow phase as the first step: its verdict, then its checks, pairing and examples."""
    if shadow.live:
        verdict = f"analysing… poll {shadow.polls}" if shadow.polls is not None else "analysing…"
        verdict_class = "verdict-none live"
    elif shadow.verdict:
        verdict, verdict_class = shadow.verdict, f"verdict-{shadow.verdict}"
    else:
        state = shadow.analysis.state if shadow.analysis is not None else None
        verdict, verdict_class = _task_pending(state), "verdict-none"
    detail = _judged(shadow.judge, shadow.polls, shadow.elapsed_seconds)
    links = " · ".join(
        f'<a href="{escape(ref.url)}" target="_top">{escape(label)}</a>'
        for ref, label in (
            (shadow.mirror_on, "mirror task"),
            (shadow.analysis, "analysis task"),
            (shadow.mirror_off, "mirror-off task"),
        )
        if ref is not None
    )
    mirror = f"mirror {shadow.mirror_percent:g}%" if shadow.mirror_percent is not None else "mirror"
    rows = [
        f'<tr class="step shadow" data-step="shadow"><td>shadow</td><td class="num">{mirror}</td>'
        f"<td>{_short_time(shadow.mirrored_at)}</td><td>—</td>"
        f'<td class="verdict {verdict_class}">{escape(verdict)}</td>'
        f"<td>{escape(shadow.reason or '')}</td><td>{escape(detail)}</td><td>{links}</td></tr>"
    ]
    parts = []
    if shadow.checks:
        parts.append(_checks_table(shadow.checks, dict(shadow.limits), live=shadow.live))
    if shadow.pairing is not None:
        parts.append(_pairing(shadow.pairing))
    if shadow.examples:
        examples = "".join(
            f'<tr class="example" data-request-id="{escape(e.request_id)}">'
            f"<td><code>{escape(e.request_id)}</code></td><td>{escape(e.check)}</td>"
            f"<td><code>{escape(e.stable)}</code></td><td><code>{escape(e.canary)}</code></td></tr>"
            for e in shadow.examples
        )
        parts.append(
            '<table class="examples"><thead><tr><th>Example request</th><th>Check</th>'
            f"<th>Stable predicted</th><th>Canary predicted</th></tr></thead><tbody>{examples}"
            "</tbody></table>"
        )
    if parts:
        rows.append(f'<tr class="check-row"><td></td><td colspan="7">{"".join(parts)}</td></tr>')
    return rows


#: how the page names the counts of a shadow phase's pairing
_PAIRING_LABELS = (
    ("pairs", "pairs"),
    ("stable_records", "stable records"),
    ("canary_records", "canary records"),
    ("unpaired_stable", "stable without a canary answer"),
    ("unpaired_canary", "canary without a stable answer"),
    ("pending", "still within the pairing window"),
    ("input_mismatch", "different inputs, not compared"),
    ("duplicates", "duplicates"),
    ("other_versions", "of other versions"),
    ("before_phase", "from before the phase"),
)


def _pairing(pairing: ShadowPairing) -> str:
    """Every count of the pairing (each record is in a pair or in one of them), and examples."""
    items = "".join(
        f'<div data-count="{name}"><dt>{escape(label)}</dt><dd>{count:,}</dd></div>'
        for name, label in _PAIRING_LABELS
        if (count := getattr(pairing, name)) is not None
    )
    unpaired = ""
    if pairing.unpaired_examples:
        ids = ", ".join(f"<code>{escape(i)}</code>" for i in pairing.unpaired_examples)
        unpaired = f'<p class="pairing unpaired">Unpaired, e.g. {ids}</p>'
    return f'<dl class="facts pairing">{items}</dl>{unpaired}'


def _task_pending(state: str | None) -> str:
    """What an analysis task without a verdict is doing, from its state."""
    if state in (None, "scheduled", "queued", "none"):
        return "not started"
    if state in ("running", "deferred", "up_for_reschedule"):
        return "analysing…"
    if state in ("skipped", "upstream_failed"):
        return state.replace("_", " ")
    return f"no verdict recorded (task {state})"


def _pending(step: Step) -> str:
    state = step.analysis.state if step.analysis is not None else None
    if step.analysis is None:
        if step.weight == 100:
            # canary_rollout() judges no 100% step: the stable arm has no traffic to compare.
            weight_state = step.set_weight.state if step.set_weight is not None else None
            return "skipped" if weight_state == "skipped" else "no analysis at 100%"
        return "no analysis task"
    return _task_pending(state)


def _fmt(value: float | None, *, ratio: bool = False) -> str:
    if value is None:
        return "—"
    if ratio and 0 <= value <= 1:
        return f"{value:.4g}"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _checks_table(
    checks: Sequence[CheckResult], limits: Mapping[str, str], *, live: bool = False
) -> str:
    """Each check's evidence (both arms' values and requests) beside the limits it is held to."""
    rows = "".join(
        f'<tr class="check" data-check="{escape(check.name)}"><td>{escape(check.name)}</td>'
        f'<td class="verdict verdict-{escape(check.status)}">{escape(check.status)}</td>'
        f'<td class="num canary-value">{_fmt(check.canary_value, ratio=True)}</td>'
        f'<td class="num stable-value">{_fmt(check.stable_value, ratio=True)}</td>'
        f'<td class="limit">{escape(limits.get(check.name) or "—")}</td>'
        f'<td class="num">{_fmt(check.canary_requests)}</td>'
        f'<td class="num">{_fmt(check.stable_requests)}</td>'
        f'<td class="num">{_fmt(check.statistic)}</td>'
        f'<td class="num">{_fmt(check.p_value, ratio=True)}</td>'
        f"<td>{escape(check.message)}</td></tr>"
        for check in checks
    )
    head = (
        "<tr><th>Check</th><th>Status</th><th>Canary</th><th>Stable</th><th>Limit</th>"
        "<th>Canary req.</th><th>Stable req.</th><th>Statistic</th><th>p-value</th>"
        "<th>Message</th></tr>"
    )
    kind = "checks live" if live else "checks"
    return f'<table class="{kind}"><thead>{head}</thead><tbody>{rows}</tbody></table>'


# Chart geometry (SVG user units; the SVG scales to its container).
_W, _H = 760, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 16, 14, 28


def weight_chart(rollout: Rollout, now: datetime) -> str:
    """Canary weight over time as a step line, with each step's verdict as a marker."""
    points = list(rollout.weights)
    if not points:
        return '<p class="empty">No weight changes recorded yet.</p>'
    times = [timestamp_or_none(point.at) for point in points]
    end_text = rollout.end_date if rollout.outcome is not Outcome.RUNNING else None
    end = timestamp_or_none(end_text) or (now if rollout.outcome is Outcome.RUNNING else None)
    decided = {step.index: timestamp_or_none(step.decided_at) for step in rollout.steps}
    timed = all(t is not None for t in times)
    if timed:
        stamps = [t.timestamp() for t in times if t is not None]
        last = max([*stamps, *(d.timestamp() for d in decided.values() if d is not None)])
        if end is not None:
            last = max(last, end.timestamp())
        first = stamps[0]
        span = last - first or 1.0
        xs = [(s - first) / span for s in stamps]
        x_end = 1.0

        def x_at(moment: datetime | None) -> float | None:
            return None if moment is None else (moment.timestamp() - first) / span

        end_label = datetime.fromtimestamp(last, tz=times[0].tzinfo if times[0] else None)
        x_labels = [(0.0, _short_time(points[0].at)), (1.0, end_label.strftime("%H:%M:%S"))]
    else:
        # Without timestamps the steps are spaced evenly, in order.
        count = len(points)
        xs = [i / count for i in range(count)]
        x_end = 1.0

        def x_at(moment: datetime | None) -> float | None:
            return None

        x_labels = []

    def px(fraction: float) -> float:
        return _LEFT + fraction * (_W - _LEFT - _RIGHT)

    def py(weight: float) -> float:
        return _TOP + (1 - weight / 100) * (_H - _TOP - _BOTTOM)

    parts: list[str] = []
    for level in (0, 25, 50, 75, 100):
        y = py(level)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{level}%</text>')
    for fraction, label in x_labels:
        anchor = "start" if fraction == 0 else "end"
        parts.append(
            f'<text x="{px(fraction):.1f}" y="{_H - 8}" text-anchor="{anchor}">{escape(label)}</text>'
        )

    path = [f"M{px(xs[0]):.1f},{py(points[0].weight):.1f}"]
    for i in range(1, len(points)):
        path.append(f"H{px(xs[i]):.1f}V{py(points[i].weight):.1f}")
    path.append(f"H{px(x_end):.1f}")
    parts.append(f'<path class="weight" d="{"".join(path)}"/>')

    for i, point in enumerate(points):
        parts.append(
            f'<circle cx="{px(xs[i]):.1f}" cy="{py(point.weight):.1f}" r="3" fill="var(--accent)">'
            f"<title>{escape(point.task_id)}: canary {point.weight}%</title></circle>"
        )
    # One marker where traffic left the canary: the analysis's own rollback, else the task's.
    marked = next(
        (i for i, p in enumerate(points) if p.at and p.at == rollout.rolled_back_at),
        next((i for i, p in enumerate(points) if p.task_id.endswith("rollback")), None),
    )
    for i, point in enumerate(points):
        if i == marked and rollout.outcome is Outcome.ROLLED_BACK:
            parts.append(
                f'<text class="rollback-marker" x="{px(xs[i]):.1f}" y="{py(point.weight) - 9:.1f}" '
                f'text-anchor="end" style="fill:{_VERDICT_COLOUR["FAIL"]};font-weight:700">rolled back</text>'
            )
    step_x = {point.task_id: xs[i] for i, point in enumerate(points)}
    for step in rollout.steps:
        if not step.verdict or step.weight is None:
            continue
        colour = _VERDICT_COLOUR.get(step.verdict, "#59636e")
        x = x_at(decided.get(step.index))
        if x is None and step.set_weight is not None:
            x = step_x.get(step.set_weight.task_id)
        if x is None:
            continue
        cx, cy = px(min(max(x, 0.0), 1.0)), py(step.weight)
        label_y = cy - 9 if step.weight < 90 else cy + 16
        parts.append(
            f'<g class="verdict-marker" data-step="{step.index}" data-weight="{step.weight}">'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{colour}" stroke="var(--card)" stroke-width="2">'
            f"<title>{step.weight}%: {escape(step.verdict)}{' — ' + escape(step.reason) if step.reason else ''}</title></circle>"
            f'<text x="{cx:.1f}" y="{label_y:.1f}" text-anchor="middle" style="fill:{colour};font-weight:700">'
            f"{step.weight}% {escape(step.verdict)}</text></g>"
        )
    label = f"Canary weight over time for {rollout.dag_id} {rollout.run_id}"
    return (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(label)}">'
        f"{''.join(parts)}</svg>"
    )
