"""An auth manager for the UI tests: Airflow's simple auth manager, with users limited to some DAGs.

Airflow's simple auth manager grants a role's rights on every DAG; deployments with per-DAG rights
(FAB's ``can_read`` on ``DAG:<id>``, Keycloak, a custom manager) answer ``is_authorized_dag`` per
DAG id. This manager does the same for the users named in ``$CANARY_UI_DAG_GRANTS`` (JSON: user ->
list of DAG ids they may read); every other user is treated exactly as the simple manager does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

GRANTS_ENV = "CANARY_UI_DAG_GRANTS"


def _grants() -> dict[str, list[str]]:
    loaded: dict[str, list[str]] = json.loads(os.environ.get(GRANTS_ENV) or "{}")
    return loaded


class DagGrantsAuthManager(SimpleAuthManager):
    """The simple auth manager, except that granted users may touch only their DAGs."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        granted = _grants().get(user.get_name())
        if granted is not None and (details is None or details.id not in granted):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
