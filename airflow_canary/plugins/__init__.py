"""The Airflow plugin that adds the "Canary rollouts" page to the Airflow UI."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the app is mounted in the api-server (also the page's address in the UI iframe).
URL_PREFIX = "/canary-rollouts"
#: The nav entry's address, relative: the Airflow UI's page has ``<base href="{base_url}/">``,
#: so it resolves to ``<base_url>/canary-rollouts/`` also under a sub-path such as ``/airflow``.
NAV_HREF = "canary-rollouts/"


class RolloutsApp:
    """ASGI app that builds the FastAPI app on its first request.

    Every Airflow process loads plugins; only the api-server serves requests, so only it
    pays for importing the api-server's security and database layers.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_canary.plugins.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class CanaryRolloutsPlugin(AirflowPlugin):
    """Mounts the rollouts app in the api-server and adds a nav entry that frames it."""

    name = "canary_rollouts"
    fastapi_apps = [{"app": RolloutsApp(), "url_prefix": URL_PREFIX, "name": "Canary rollouts"}]
    external_views = [
        {
            "name": "Canary rollouts",
            "href": NAV_HREF,
            "url_route": "canary-rollouts",
            "destination": "nav",
            "category": "browse",
        }
    ]
