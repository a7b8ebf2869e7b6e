"""``airflow dags test`` runs refuse a metadata database that a live scheduler, dag-processor or
triggerer holds (``tests.fixtures.stack.live_components``), read from Airflow's real ``job`` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.fixtures.stack import LIVE_HEARTBEAT_SECONDS, live_components


@pytest.fixture
def database(airflow_db: Path) -> Iterator[Path]:
    path = airflow_db / "airflow.db"
    yield path
    with closing(sqlite3.connect(path)) as connection, connection:  # commit, then close
        connection.execute("DELETE FROM job WHERE hostname = 'live-components-test'")


def add_job(database: Path, job_type: str, state: str, heartbeat_age: float) -> None:
    beat = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=heartbeat_age)
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "INSERT INTO job (job_type, state, hostname, start_date, latest_heartbeat)"
            " VALUES (?, ?, 'live-components-test', ?, ?)",
            (job_type, state, beat.isoformat(sep=" "), beat.isoformat(sep=" ")),
        )


def test_a_running_job_with_a_fresh_heartbeat_is_live(database: Path) -> None:
    add_job(database, "SchedulerJob", "running", heartbeat_age=1)
    assert any(
        c.startswith("SchedulerJob on live-components-test") for c in live_components(database)
    )


def test_stopped_jobs_and_jobs_that_died_long_ago_are_not(database: Path) -> None:
    add_job(database, "DagProcessorJob", "success", heartbeat_age=1)
    add_job(database, "TriggererJob", "running", heartbeat_age=LIVE_HEARTBEAT_SECONDS + 5)
    assert not [c for c in live_components(database) if "live-components-test" in c]
