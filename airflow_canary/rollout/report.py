"""What a rollout tells people: its outcome, the reason, every judged step's numbers and links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from html import escape
from typing import Any


class RolloutOutcome(str, Enum):
    """How a rollout ended."""

    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class CheckEvidence:
    """One check of one step: its status and the numbers behind it."""

    name: str
    status: str
    canary_value: float | None
    stable_value: float | None
    canary_requests: float | None
    stable_requests: float | None
    p_value: float | None
    message: str

    @classmethod
    def from_verdict(cls, check: Mapping[str, Any]) -> CheckEvidence:
        return cls(
            name=str(check.get("name") or "?"),
            status=str(check.get("status") or "?"),
            canary_value=_number(check.get("canary_value")),
            stable_value=_number(check.get("stable_value")),
            canary_requests=_number(check.get("canary_requests")),
            stable_requests=_number(check.get("stable_requests")),
            p_value=_number(check.get("p_value")),
            message=str(check.get("message") or ""),
        )

    def line(self) -> str:
        """``error-rate PASS: canary 0.2% vs stable 0.1% (1200 / 9800 requests), p=0.41 - ...``"""
        requests = (
            f" ({_fmt(self.canary_requests)} / {_fmt(self.stable_requests)} requests)"
            if self.canary_requests is not None or self.stable_requests is not None
            else ""
        )
        p_value = f", p={_fmt(self.p_value)}" if self.p_value is not None else ""
        message = f" - {self.message}" if self.message else ""
        return (
            f"{self.name} {self.status}: canary {_fmt(self.canary_value)} vs stable "
            f"{_fmt(self.stable_value)}{requests}{p_value}{message}"
        )


@dataclass(frozen=True)
class StepEvidence:
    """One judged step: the analysis task, its verdict and links to its data."""

    task_id: str
    weight: int | None
    verdict: str
    reason: str
    checks: tuple[CheckEvidence, ...]
    prometheus_url: str | None = None
    dashboard_url: str | None = None

    @classmethod
    def from_verdict(
        cls,
        task_id: str,
        verdict: Mapping[str, Any],
        *,
        weight: int | None = None,
        prometheus_url: str | None = None,
        dashboard_url: str | None = None,
    ) -> StepEvidence:
        checks = verdict.get("checks")
        return cls(
            task_id=task_id,
            weight=weight,
            verdict=str(verdict.get("verdict") or "?"),
            reason=str(verdict.get("reason") or ""),
            checks=tuple(
                CheckEvidence.from_verdict(c) for c in checks or () if isinstance(c, Mapping)
            ),
            prometheus_url=prometheus_url or None,
            dashboard_url=dashboard_url or None,
        )

    def title(self) -> str:
        at = f" at {self.weight}%" if self.weight is not None else ""
        return f"{self.task_id}{at}: {self.verdict}"


@dataclass(frozen=True)
class RolloutReport:
    """Everything a message about one rollout says; JSON-able through :meth:`to_dict`.

    :param outcome: promoted or rolled back
    :param dag_id: the rollout's DAG
    :param run_id: its run
    :param namespace: namespace of the route object
    :param route: the route object whose traffic moved (a VirtualService, or an HTTPRoute with
        Gateway API)
    :param stable_version: version that served before (metric label)
    :param canary_version: version rolled out
    :param reason: why it ended so (the rollback's reason; for a promotion, the last verdict)
    :param steps: every judged step, in order
    :param run_url: the run in the Airflow UI, when ``[api] base_url`` is known
    """

    outcome: RolloutOutcome
    dag_id: str
    run_id: str
    namespace: str | None
    route: str | None
    stable_version: str | None
    canary_version: str | None
    reason: str
    steps: tuple[StepEvidence, ...] = field(default=())
    run_url: str | None = None

    @property
    def subject(self) -> str:
        what = "promoted" if self.outcome is RolloutOutcome.PROMOTED else "rolled back"
        target = "/".join(p for p in (self.namespace, self.route) if p) or self.dag_id
        return f"Canary {self.canary_version or '?'} {what} on {target} ({self.dag_id})"

    def text(self) -> str:
        """Plain-text message: subject, reason, per-step verdicts with every check, links."""
        lines = [self.subject, "", f"Reason: {self.reason}"]
        if self.run_url:
            lines.append(f"Run: {self.run_url}")
        for step in self.steps:
            lines += ["", step.title()]
            if step.reason:
                lines.append(f"  {step.reason}")
            lines += [f"  - {check.line()}" for check in step.checks]
            if step.prometheus_url:
                lines.append(f"  Prometheus: {step.prometheus_url}")
            if step.dashboard_url:
                lines.append(f"  Dashboard: {step.dashboard_url}")
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The same message as HTML (for e-mail)."""
        parts = [f"<h3>{escape(self.subject)}</h3>", f"<p><b>Reason:</b> {escape(self.reason)}</p>"]
        if self.run_url:
            parts.append(
                f'<p><a href="{escape(self.run_url)}">Airflow run {escape(self.run_id)}</a></p>'
            )
        for step in self.steps:
            parts.append(f"<h4>{escape(step.title())}</h4>")
            if step.reason:
                parts.append(f"<p>{escape(step.reason)}</p>")
            if step.checks:
                items = "".join(f"<li>{escape(check.line())}</li>" for check in step.checks)
                parts.append(f"<ul>{items}</ul>")
            links = [
                f'<a href="{escape(url)}">{name}</a>'
                for name, url in (
                    ("Prometheus", step.prometheus_url),
                    ("Dashboard", step.dashboard_url),
                )
                if url
            ]
            if links:
                parts.append(f"<p>{' · '.join(links)}</p>")
        return "\n".join(parts)

    def markdown(self) -> str:
        """Markdown: the subject, the reason, one section per judged step."""
        head = f"**{self.subject}**\n\nReason: {self.reason}\n\n"
        return head + (steps_markdown(self.steps) if self.steps else "No step was judged.\n")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        data["subject"] = self.subject
        return data


def steps_markdown(steps: Sequence[StepEvidence]) -> str:
    """Each judged step's verdict, every check's numbers and the links, as Markdown."""
    lines: list[str] = []
    for step in steps:
        lines += [f"**{step.title()}** — {step.reason}", ""]
        lines += [f"- {check.line()}" for check in step.checks]
        links = [
            f"[{name}]({url})"
            for name, url in (
                ("Prometheus", step.prometheus_url),
                ("Dashboard", step.dashboard_url),
            )
            if url
        ]
        if links:
            lines += ["", " · ".join(links)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def step_weights(analysis_task_ids: Sequence[str], planned: Any) -> dict[str, int]:
    """The weight each analysis task judged, from the plan's ``steps`` and the ``step_<k>`` ids."""
    weights: dict[str, int] = {}
    if not isinstance(planned, Sequence):
        return weights
    for task_id in analysis_task_ids:
        for part in task_id.split("."):
            if part.startswith("step_") and part[5:].isdigit():
                index = int(part[5:])
                if 1 <= index <= len(planned) and isinstance(planned[index - 1], int):
                    weights[task_id] = planned[index - 1]
    return weights


def steps_from_xcoms(
    verdicts: Sequence[tuple[str, Mapping[str, Any] | None, Mapping[str, str | None]]],
    weights: Mapping[str, int] | None = None,
) -> tuple[StepEvidence, ...]:
    """Judged steps from ``(task_id, verdict, links)`` triples; tasks without a verdict are left out.

    ``links`` maps ``"Prometheus"``/``"Dashboard"`` to URLs; ``weights`` maps a task id to the
    canary weight its step judged.
    """
    found = []
    for task_id, verdict, links in verdicts:
        if not isinstance(verdict, Mapping) or not isinstance(verdict.get("verdict"), str):
            continue
        found.append(
            StepEvidence.from_verdict(
                task_id,
                verdict,
                weight=(weights or {}).get(task_id),
                prometheus_url=links.get("Prometheus"),
                dashboard_url=links.get("Dashboard"),
            )
        )
    return tuple(found)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.4g}"


__all__ = [
    "CheckEvidence",
    "RolloutOutcome",
    "RolloutReport",
    "StepEvidence",
    "step_weights",
    "steps_from_xcoms",
    "steps_markdown",
]
