"""Whether the provider's long waits defer to the triggerer when a task does not say."""

from __future__ import annotations

from airflow.sdk import conf


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (Airflow's setting for every deferrable operator).

    The fallback (true) applies only where the option is absent from the configuration.
    """
    return conf.getboolean("operators", "default_deferrable", fallback=True)


__all__ = ["default_deferrable"]
