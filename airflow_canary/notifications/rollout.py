"""RolloutNotifier: send a rollout's report (outcome, reason, numbers, links) through any notifier."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

#: Context key under which ``canary_rollout()`` hands its report to notifiers: a dict with
#: ``subject``, ``text``, ``html``, ``markdown``, ``outcome``, ``reason``, ``steps``, ...
REPORT_CONTEXT_KEY = "canary_rollout"

#: The parts of a report a notifier field can receive.
REPORT_PARTS = ("subject", "text", "html", "markdown")

# Message fields of common notifiers, in the order they are looked for.
_KNOWN_FIELDS: tuple[tuple[str, dict[str, str]], ...] = (
    ("html_content", {"subject": "subject", "html_content": "html"}),  # SmtpNotifier
    ("text", {"text": "text"}),  # SlackNotifier, SlackWebhookNotifier
    ("message", {"message": "text"}),  # Opsgenie, Pagerduty-style notifiers
    ("body", {"body": "markdown"}),
)


class RolloutNotifier(BaseNotifier):
    """Fill another notifier's message fields from the rollout report, then let it send.

    ``canary_rollout(notifiers=[...])`` calls its notifiers on promotion and on rollback with
    the report in the context under ``"canary_rollout"``. A plain notifier can use it in its
    own templates (``"{{ canary_rollout.subject }}"``); ``RolloutNotifier`` writes it for you:

    .. code-block:: python

        RolloutNotifier(SmtpNotifier(to="oncall@example.com", from_email="canary@example.com"))

    :param notifier: any Airflow notifier (``SmtpNotifier``, ``SlackNotifier``, ...); its own
        templated fields are rendered first, then the message fields are set
    :param fields: which attribute of ``notifier`` receives which part of the report
        (``"subject"``, ``"text"``, ``"html"`` or ``"markdown"``); by default ``subject`` and
        ``html_content`` for e-mail, else ``text``, ``message`` or ``body``, whichever the
        notifier has
    :raises ValueError: when ``fields`` names an unknown part or an attribute the notifier
        lacks, or when no default applies to the notifier
    """

    def __init__(self, notifier: BaseNotifier, *, fields: Mapping[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(notifier, BaseNotifier):
            raise ValueError(
                f"notifier must be an Airflow BaseNotifier (e.g. SmtpNotifier), got {notifier!r}"
            )
        self.notifier = notifier
        self.fields = dict(fields) if fields is not None else _default_fields(notifier)
        for attribute, part in self.fields.items():
            if part not in REPORT_PARTS:
                raise ValueError(
                    f"fields[{attribute!r}] must be one of {', '.join(REPORT_PARTS)}, got {part!r}"
                )
            if not hasattr(notifier, attribute):
                raise ValueError(
                    f"{type(notifier).__name__} has no attribute {attribute!r} to put the "
                    f"report's {part} in"
                )

    def notify(self, context: Any) -> None:
        report = context.get(REPORT_CONTEXT_KEY) if isinstance(context, Mapping) else None
        if not isinstance(report, Mapping):
            raise ValueError(
                f"RolloutNotifier needs the rollout report in the context under "
                f"{REPORT_CONTEXT_KEY!r}; use it in canary_rollout(notifiers=[...])"
            )
        # A copy per message: the wrapped notifier's templates stay unrendered for the next one.
        notifier = copy.copy(self.notifier)
        notifier.render_template_fields(context)
        for attribute, part in self.fields.items():
            setattr(notifier, attribute, str(report.get(part) or ""))
        notifier.notify(context)


def _default_fields(notifier: BaseNotifier) -> dict[str, str]:
    for marker, fields in _KNOWN_FIELDS:
        if hasattr(notifier, marker):
            return dict(fields)
    raise ValueError(
        f"RolloutNotifier does not know where {type(notifier).__name__} takes its message; "
        f"pass fields={{'<attribute>': 'text'}} (parts: {', '.join(REPORT_PARTS)})"
    )


__all__ = ["REPORT_CONTEXT_KEY", "RolloutNotifier"]
