"""Train the demo's scikit-learn models (a good one and a deliberately bad one) on a bundled dataset."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# scikit-learn and numpy are imported inside functions: Airflow DAG files import this
# module, and DAG files must parse fast.

#: The dataset ships with scikit-learn, so training never touches the network.
DATASET_NAME = "breast_cancer"
#: Share of rows held out for evaluation and for the load generator's requests.
HOLDOUT_FRACTION = 0.25
#: Fixed so the trainer and the load generator agree on which rows are the holdout.
SPLIT_SEED = 42


class ModelQuality(str, enum.Enum):
    """Which model ``train_model`` produces."""

    GOOD = "good"
    BAD = "bad"

    @classmethod
    def parse(cls, value: str | ModelQuality) -> ModelQuality:
        if isinstance(value, ModelQuality):
            return value
        try:
            return cls(value)
        except ValueError:
            expected = ", ".join(q.value for q in cls)
            raise ValueError(f"quality must be one of {expected}, got {value!r}") from None


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """The bundled dataset split into training rows and holdout rows (with ground truth)."""

    X_train: npt.NDArray[np.float64]
    y_train: npt.NDArray[np.int64]
    X_holdout: npt.NDArray[np.float64]
    y_holdout: npt.NDArray[np.int64]
    feature_names: tuple[str, ...]


@dataclass(frozen=True)
class TrainingResult:
    """What ``train_model`` wrote and how well it does on the holdout rows."""

    path: Path
    quality: ModelQuality
    holdout_accuracy: float
    n_train: int
    n_holdout: int
    dataset: str
    feature_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, e.g. for XCom."""
        return {
            "path": str(self.path),
            "quality": self.quality.value,
            "holdout_accuracy": self.holdout_accuracy,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "dataset": self.dataset,
            "feature_names": list(self.feature_names),
        }


def load_dataset() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], tuple[str, ...]]:
    """The bundled breast-cancer dataset: features ``X``, labels ``y`` (0 malignant, 1 benign), feature names."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data, bunch.target, tuple(str(name) for name in bunch.feature_names)


def holdout_split() -> DatasetSplit:
    """The deterministic, stratified train/holdout split shared by training and the load generator."""
    from sklearn.model_selection import train_test_split

    X, y, names = load_dataset()
    X_train, X_holdout, y_train, y_holdout = train_test_split(
        X, y, test_size=HOLDOUT_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return DatasetSplit(X_train, y_train, X_holdout, y_holdout, names)


def _corrupted_labels(split: DatasetSplit, feature: int) -> npt.NDArray[np.int64]:
    """Training labels with a systematic labelling bug: flipped wherever ``feature`` is above its median.

    Unlike random label noise (which a linear model averages away) a systematic flip teaches
    the model a wrong rule for half the feature space, so the result is reliably bad
    (holdout accuracy about 0.43-0.62 whichever feature is picked) while still predicting
    both classes, like a real regression would.
    """
    import numpy as np

    column = split.X_train[:, feature]
    flip = column > np.median(column)
    return np.where(flip, 1 - split.y_train, split.y_train)


def train_model(
    path: str | Path, quality: str | ModelQuality = "good", seed: int = 0
) -> TrainingResult:
    """Train a classifier on the bundled dataset and save it with joblib at ``path``.

    ``quality="good"``: a StandardScaler + LogisticRegression pipeline (holdout accuracy ~0.98).
    ``quality="bad"``: the same pipeline trained on systematically mislabelled rows (the
    feature whose above-median rows are flipped is ``seed % n_features``), holdout accuracy
    at most ~0.62. Any other quality raises ``ValueError``.
    """
    model_quality = ModelQuality.parse(quality)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    split = holdout_split()
    if model_quality is ModelQuality.GOOD:
        labels = split.y_train
    else:
        labels = _corrupted_labels(split, seed % len(split.feature_names))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    model.fit(split.X_train, labels)
    # Lets the model server name features in its validation errors.
    model.feature_names_ = split.feature_names
    accuracy = float(model.score(split.X_holdout, split.y_holdout))

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a model server polling for the file never loads half of it.
    partial = target.with_name(f".{target.name}.partial")
    joblib.dump(model, partial)
    partial.replace(target)
    return TrainingResult(
        path=target,
        quality=model_quality,
        holdout_accuracy=accuracy,
        n_train=len(split.y_train),
        n_holdout=len(split.y_holdout),
        dataset=DATASET_NAME,
        feature_names=split.feature_names,
    )
