"""The model server's prediction log (``--prediction-log``), for live and mirrored requests alike.

Two real ``serve-model`` processes behind the in-process mesh, v1 serving and v2 receiving a
100% mirror written by the product's routing; both logs are then read back through Airflow's
ObjectStoragePath (``file://``) and every live request's record has a mirrored twin with the same
``x-request-id`` and input hash.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from airflow_canary.hooks.prediction_log import read_prediction_log
from airflow_canary.local.model import server as modelserver
from airflow_canary.local.model.training import holdout_split, train_model
from airflow_canary.routing import RouteTarget
from airflow_canary.routing.istio_mirror import set_mirror
from tests.local.apps.inprocess import InProcessMesh, seed, version_deployment
from tests.local.test_dataplane import run

pytestmark = pytest.mark.timeout(180)

CLI = str(Path(sys.executable).parent / "airflow-canary")


def model_deployment(version: str, model: Path, log: Path) -> dict[str, Any]:
    dep = version_deployment(version, 1)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [CLI, "serve-model", "--model", str(model), "--version", version]
    container["env"] = [{"name": "MODEL_PREDICTION_LOG", "value": f"file://{log}"}]
    return dep


def test_live_and_mirrored_predictions_are_logged_with_one_request_id(tmp_path: Path) -> None:
    model = train_model(tmp_path / "good.joblib", "good").path
    rows = holdout_split().X_holdout[:30].tolist()
    logs = {v: tmp_path / "logs" / v / "predictions.jsonl" for v in ("v1", "v2")}

    async def scenario() -> list[dict[str, Any]]:
        async with InProcessMesh(tmp_path / "mesh") as mesh, aiohttp.ClientSession() as session:
            mesh.apply(seed("service-model-service"))
            mesh.apply(seed("destinationrule-model-destination"))
            for version in ("v1", "v2"):
                mesh.apply(model_deployment(version, model, logs[version]))
            await mesh.wait_ready("model-v1", 1, timeout=60)
            await mesh.wait_ready("model-v2", 1, timeout=60)
            mesh.apply(set_mirror(seed("vs-00-all-v1"), RouteTarget(), 100))
            answers = []
            for row in rows[:-1]:  # no x-request-id: the mesh sets one
                async with session.post(
                    mesh.data_url + "/predict",
                    json={"features": row},
                    headers={"Host": "model-service"},
                ) as resp:
                    answers.append(await resp.json())
            async with session.post(  # a batch of two instances
                mesh.data_url + "/predict",
                json={"instances": [rows[-1], rows[0]]},
                headers={"Host": "model-service", "x-request-id": "batch-1"},
            ) as resp:
                answers.append(await resp.json())
            async with session.post(  # refused: no prediction, so no record
                mesh.data_url + "/predict",
                json={"features": [1.0]},
                headers={"Host": "model-service"},
            ) as resp:
                assert resp.status == 400
            for _ in range(200):  # the mirrored copies land after the answers
                done = read_prediction_log(f"file://{logs['v2']}")
                if len(done.records) >= len(rows) + 1:
                    break
                await asyncio.sleep(0.05)
            return answers

    answers = run(scenario())
    v1 = read_prediction_log(f"file://{logs['v1']}")
    v2 = read_prediction_log(f"file://{logs['v2']}")
    for log in (v1, v2):
        assert log.rows == len(log.records) == len(rows) + 1  # 29 single + 2 batched instances
        assert log.describe_problems() == ""
    assert {r.version for r in v1.records} == {"v1"} and {r.version for r in v2.records} == {"v2"}
    assert not any(r.mirrored for r in v1.records)  # v1 served the callers
    assert all(r.mirrored for r in v2.records)  # v2 only ever saw the -shadow copies
    live = {r.key: r for r in v1.records}
    shadow = {r.key: r for r in v2.records}
    assert live.keys() == shadow.keys()
    assert ("batch-1", 0) in live and ("batch-1", 1) in live
    assert [live[(a["request_id"], 0)].prediction.class_ for a in answers] == [
        a["predictions"][0] for a in answers
    ]
    for key, record in live.items():
        twin = shadow[key]
        assert twin.input_hash == record.input_hash
        assert twin.prediction.class_ == record.prediction.class_  # the same model
        scores = record.prediction.score_map()
        assert set(scores) == {"0", "1"} and abs(sum(scores.values()) - 1) < 1e-5


def test_a_remote_url_is_refused_naming_it() -> None:
    with pytest.raises(modelserver.ConfigError, match="local path or file:// URL.*s3://b/p"):
        modelserver.parse_config(
            ["--model", "m", "--version", "v1", "--prediction-log", "s3://b/p"], {}
        )
    config = modelserver.parse_config(
        ["--model", "m", "--version", "v1"], {"MODEL_PREDICTION_LOG": "file:///tmp/p.jsonl"}
    )
    assert config.prediction_log == Path("/tmp/p.jsonl")
