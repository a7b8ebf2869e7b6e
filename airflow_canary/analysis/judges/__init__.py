"""Judges that turn observations into verdicts, and the factory that picks one by name."""

from __future__ import annotations

import inspect
from typing import Any

from airflow_canary.analysis.judges.base import Classification, Judge
from airflow_canary.analysis.judges.mann_whitney import MannWhitneyJudge
from airflow_canary.analysis.judges.sequential import SequentialJudge
from airflow_canary.analysis.judges.threshold import ThresholdJudge
from airflow_canary.analysis.values import AnalysisError

JUDGES: dict[str, type[Judge]] = {
    SequentialJudge.name: SequentialJudge,
    ThresholdJudge.name: ThresholdJudge,
    MannWhitneyJudge.name: MannWhitneyJudge,
}


def make_judge(name: str = "sequential", **options: Any) -> Judge:
    """Build the judge called ``name`` with its options; unknown names or options raise."""
    cls = JUDGES.get(name)
    if cls is None:
        raise AnalysisError(f"unknown judge {name!r}; known judges: {', '.join(sorted(JUDGES))}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(options) - accepted
    if unknown:
        raise AnalysisError(
            f"unknown option(s) {sorted(unknown)} for judge {name!r}; it accepts {sorted(accepted)}"
        )
    return cls(**options)


__all__ = [
    "JUDGES",
    "Classification",
    "Judge",
    "MannWhitneyJudge",
    "SequentialJudge",
    "ThresholdJudge",
    "make_judge",
]
