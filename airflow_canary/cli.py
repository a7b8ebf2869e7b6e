"""The ``airflow-canary`` command: the local mesh and its companions (model server, load, Prometheus)."""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module whose ``main(argv)`` runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "mesh": (
        "airflow_canary.local.mesh",
        "run the local mesh (Kubernetes API, process runner, data plane)",
    ),
    "serve-model": (
        "airflow_canary.local.model.server",
        "serve a scikit-learn model over HTTP with metrics",
    ),
    "loadgen": (
        "airflow_canary.local.tools.loadgen",
        "send steady prediction traffic through the mesh",
    ),
    "prometheus": (
        "airflow_canary.local.tools.prometheus",
        "run Prometheus scraping the mesh and model servers",
    ),
}


def _usage() -> str:
    lines = ["usage: airflow-canary COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"airflow-canary: unknown command {name!r}; expected one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
