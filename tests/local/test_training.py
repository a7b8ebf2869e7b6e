"""Training the demo models on the bundled dataset: good vs bad accuracy, persistence, the shared holdout split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

from airflow_canary.local.model.training import (
    DATASET_NAME,
    ModelQuality,
    holdout_split,
    load_dataset,
    train_model,
)


def test_good_model_is_accurate_and_saved(tmp_path: Path) -> None:
    result = train_model(tmp_path / "models" / "good.joblib", "good")

    assert result.quality is ModelQuality.GOOD
    assert result.holdout_accuracy >= 0.95
    assert result.dataset == DATASET_NAME
    assert result.n_train + result.n_holdout == 569
    assert len(result.feature_names) == 30
    assert result.to_dict()["quality"] == "good"

    model = joblib.load(result.path)
    split = holdout_split()
    assert model.n_features_in_ == 30
    assert float(model.score(split.X_holdout, split.y_holdout)) == pytest.approx(
        result.holdout_accuracy
    )
    assert not list(result.path.parent.glob(".*.partial")), "temporary file left behind"


@pytest.mark.parametrize("seed", [0, 1, 9, 17, 29])
def test_bad_model_is_clearly_worse_but_predicts_both_classes(tmp_path: Path, seed: int) -> None:
    good = train_model(tmp_path / "good.joblib", ModelQuality.GOOD, seed=seed)
    bad = train_model(tmp_path / "bad.joblib", "bad", seed=seed)

    assert bad.quality is ModelQuality.BAD
    assert bad.holdout_accuracy <= 0.65
    assert good.holdout_accuracy - bad.holdout_accuracy >= 0.3
    predictions = joblib.load(bad.path).predict(holdout_split().X_holdout)
    assert set(np.unique(predictions)) == {0, 1}


def test_same_seed_trains_the_same_model(tmp_path: Path) -> None:
    first = train_model(tmp_path / "a.joblib", "bad", seed=3)
    second = train_model(tmp_path / "b.joblib", "bad", seed=3)
    X = holdout_split().X_holdout
    assert first.holdout_accuracy == second.holdout_accuracy
    assert (joblib.load(first.path).predict(X) == joblib.load(second.path).predict(X)).all()


@pytest.mark.parametrize("quality", ["medium", "GOOD", ""])
def test_unknown_quality_is_rejected_by_name(tmp_path: Path, quality: str) -> None:
    with pytest.raises(ValueError, match=f"quality must be one of good, bad, got '{quality}'"):
        train_model(tmp_path / "m.joblib", quality)
    assert not (tmp_path / "m.joblib").exists()


def test_negative_seed_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        train_model(tmp_path / "m.joblib", seed=-1)


def test_holdout_split_is_deterministic_stratified_and_disjoint() -> None:
    X, y, names = load_dataset()
    first, second = holdout_split(), holdout_split()

    assert X.shape == (569, 30) and y.shape == (569,) and len(names) == 30
    assert np.array_equal(first.X_holdout, second.X_holdout)
    assert np.array_equal(first.y_holdout, second.y_holdout)
    assert len(first.y_train) + len(first.y_holdout) == len(y)
    train_rows = {tuple(row) for row in first.X_train}
    assert not any(tuple(row) in train_rows for row in first.X_holdout)
    # Stratified: both sides keep the dataset's class balance (about 63% benign).
    assert abs(first.y_holdout.mean() - y.mean()) < 0.01
    assert abs(first.y_train.mean() - y.mean()) < 0.01


def test_importing_training_does_not_import_scikit_learn() -> None:
    # Airflow DAG files import this module; they must parse without paying for scikit-learn.
    code = "import sys, airflow_canary.local.model.training; print('sklearn' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"]
