"""The FastAPI app behind the "Canary rollouts" page, mounted into Airflow's api-server."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, bearer_scheme, get_user
from airflow.configuration import conf
from airflow.models.dag import DagModel
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from airflow_canary.plugins.metadata import Access, find_rollout_runs, get_run, load_rollouts
from airflow_canary.plugins.model import UiLinks
from airflow_canary.plugins.page import PageContext, render_page

DEFAULT_LIMIT = 25
MAX_LIMIT = 200


def ui_links() -> UiLinks:
    """Links into the Airflow UI, honouring ``[api] base_url`` when it has a sub-path."""
    from urllib.parse import urlsplit

    path = urlsplit(conf.get("api", "base_url", fallback="") or "").path or "/"
    return UiLinks(root=path if path.endswith("/") else path + "/")


def user_access(user: BaseUser, session: Session) -> Access:
    """DAGs whose task instances the user may read, and those whose XComs they may read too."""
    manager = get_auth_manager()
    dag_ids = manager.get_authorized_dag_ids(user=user, method="GET", session=session)
    teams = (
        DagModel.get_dag_id_to_team_name_mapping(sorted(dag_ids), session=session)
        if dag_ids
        else {}
    )

    def allowed(dag_id: str, entity: DagAccessEntity) -> bool:
        details = DagDetails(id=dag_id, team_name=teams.get(dag_id))
        return manager.is_authorized_dag(
            method="GET", access_entity=entity, details=details, user=user
        )

    readable = frozenset(d for d in dag_ids if allowed(d, DagAccessEntity.TASK_INSTANCE))
    xcom = frozenset(d for d in readable if allowed(d, DagAccessEntity.XCOM))
    return Access(dag_ids=readable, xcom_dag_ids=xcom)


def _username(user: BaseUser) -> str:
    try:
        return user.get_name()
    except Exception:  # some auth managers' users lack a display name
        return "you"


def _render(user: BaseUser, session: Session, dag_id: str | None, limit: int) -> str:
    access = user_access(user, session)
    runs = find_rollout_runs(session, access, dag_id=dag_id, limit=limit)
    rollouts = load_rollouts(session, runs, access, ui_links())
    context = PageContext(
        user=_username(user), generated_at=datetime.now(timezone.utc), limit=limit
    )
    return render_page(rollouts, context)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Canary rollouts",
        description="Recent canary rollouts: weight steps, verdicts, check numbers and rollbacks.",
    )

    @app.get("/rollouts", summary="Recent canary rollouts the caller may read")
    def list_rollouts(
        user: GetUserDep,
        session: SessionDep,
        dag_id: Annotated[str | None, Query(description="only this DAG")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        access = user_access(user, session)
        runs = find_rollout_runs(session, access, dag_id=dag_id, limit=limit)
        rollouts = load_rollouts(session, runs, access, ui_links())
        return {"rollouts": [rollout.to_json() for rollout in rollouts], "total": len(rollouts)}

    @app.get("/rollouts/{dag_id}/{run_id:path}", summary="The canary rollouts of one DAG run")
    def get_rollout(
        dag_id: str, run_id: str, user: GetUserDep, session: SessionDep
    ) -> dict[str, Any]:
        access = user_access(user, session)
        if dag_id not in access.dag_ids:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"you may not read task instances of DAG {dag_id!r}"
            )
        run = get_run(session, dag_id, run_id)
        rollouts = load_rollouts(session, [run], access, ui_links()) if run is not None else []
        if not rollouts:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"DAG run {dag_id}/{run_id} has no canary rollout"
            )
        return {"rollouts": [rollout.to_json() for rollout in rollouts], "total": len(rollouts)}

    @app.get("/", response_class=HTMLResponse, summary="The rollouts page", response_model=None)
    async def page(
        request: Request,
        session: SessionDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
        dag_id: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> HTMLResponse | RedirectResponse:
        try:
            user = await get_user(request, None, bearer)
        except HTTPException as error:
            if error.status_code != status.HTTP_401_UNAUTHORIZED:
                raise
            # A browser without a session goes through Airflow's login and comes back here.
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=status.HTTP_303_SEE_OTHER)
        # The database work is synchronous: run it in the thread pool, off the event loop.
        html = await run_in_threadpool(_render, user, session, dag_id, limit)
        return HTMLResponse(html)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )

    return app
