"""The convergence model: how far from exact a VQE run ends, predicted from its configuration.

Plain functions (no Dagster): the ``convergence_model`` asset (``qp_assets/assets/ml.py``) calls them.

* Data: rows of ``ml_run_summary`` (``features/ml_tables.py``) with an exact reference; target
  ``log10(max(|error_vs_exact_mha|, ERROR_FLOOR_MHA))`` (decades of milli-hartree), features the run's
  configuration (``CATEGORICAL`` + ``NUMERIC``). The molecule itself is not a feature: it is the group.
* Model: scikit-learn ``HistGradientBoostingRegressor`` (gradient-boosted trees, native categorical
  splits) behind an ``OrdinalEncoder`` (categories unseen in training are treated as missing).
* Cross-validation: leave-one-molecule-out (``LeaveOneGroupOut`` over ``molecule_name``): each fold trains
  on every other molecule and is scored (MAE, decades) on the held-out one; reported per fold and as the
  mean over folds, next to a baseline that predicts the training folds' mean.
* Artefact: the pipeline fitted on all rows, ``joblib`` bytes in S3 at ``<prefix><version>/model.joblib``
  with ``metrics.json`` beside it and ``<prefix>latest.json`` pointing at the newest version. ``version``
  is a content hash of the training rows, features, target and parameters (and the scikit-learn version):
  the same data trains the same version, which is then reused, not retrained.
* Regression: a version regresses when its mean CV MAE exceeds the previous version's by more than
  ``max(REGRESSION_MARGIN_REL * previous, REGRESSION_MARGIN_ABS)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: Configuration columns of ml_run_summary used as features (categorical / numeric).
CATEGORICAL: tuple[str, ...] = (
    "basis",
    "mapper",
    "ansatz_name",
    "initial_state",
    "optimizer_name",
    "backend_method",
)
NUMERIC: tuple[str, ...] = ("ansatz_reps", "num_qubits", "num_parameters", "max_iterations", "shots")
GROUP = "molecule_name"
TARGET = "log10_error_mha"
#: Errors below this (milli-hartree) count as this in the target: log10(0) does not exist.
ERROR_FLOOR_MHA = 1e-6
#: HistGradientBoostingRegressor parameters (part of the version hash).
DEFAULT_PARAMS: Mapping[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 5,
    "random_state": 0,
}
#: Allowed growth of the mean CV MAE over the previous version: 10 % of it, at least 0.02 decades.
REGRESSION_MARGIN_REL = 0.10
REGRESSION_MARGIN_ABS = 0.02
DEFAULT_PREFIX = "models/convergence_model/"
#: OpenMP threads of a fit. The data are small (hundreds to thousands of runs), and on a busy 2-core
#: machine OpenMP's spinning threads slow each tree down: measured 2026-11-29, load average 7, 8-fold CV
#: of 192 synthetic runs: 4.6 s with 1 thread, 61 s with 2.
FIT_THREADS = 1
_MISSING = "<none>"
#: A missing numeric feature (shots of an exact run, no iteration budget). Every numeric feature is >= 0,
#: so trees split it off like a category; NaN would do the same but a column that is all NaN in a training
#: fold crashes scikit-learn 1.9.1's binning ("window shape cannot be larger than input array shape").
MISSING_NUMERIC = -1.0


@dataclass
class TrainingData:
    """Features ``X`` (pandas DataFrame, CATEGORICAL then NUMERIC), target ``y``, ``groups`` (molecules)."""

    X: Any
    y: np.ndarray
    groups: np.ndarray
    run_ids: list[str]

    @property
    def molecules(self) -> list[str]:
        return sorted(set(self.groups.tolist()))


def training_data(rows: Sequence[Mapping[str, Any]]) -> TrainingData:
    """``TrainingData`` from ml_run_summary rows (dicts), sorted by run_id; rows without an error or a
    molecule are left out. Missing categoricals become ``'<none>'``, missing numerics ``MISSING_NUMERIC``."""
    import pandas as pd

    usable = sorted(
        (r for r in rows if r.get("error_vs_exact_mha") is not None and r.get(GROUP)),
        key=lambda r: r["run_id"],
    )
    frame = pd.DataFrame(
        {
            **{c: [str(r.get(c)) if r.get(c) is not None else _MISSING for r in usable] for c in CATEGORICAL},
            **{
                c: [float(r[c]) if r.get(c) is not None else MISSING_NUMERIC for r in usable] for c in NUMERIC
            },
        },
        columns=[*CATEGORICAL, *NUMERIC],
    )
    y = np.array([math.log10(max(abs(float(r["error_vs_exact_mha"])), ERROR_FLOOR_MHA)) for r in usable])
    return TrainingData(frame, y, np.array([str(r[GROUP]) for r in usable]), [r["run_id"] for r in usable])


def model_version(data: TrainingData, params: Mapping[str, Any] = DEFAULT_PARAMS) -> str:
    """16 hex chars of sha256 over the training rows (run ids, features, target, groups), the feature and
    target names, ``params`` and the scikit-learn version: equal inputs give equal versions."""
    import sklearn

    payload = {
        "features": [*CATEGORICAL, *NUMERIC],
        "target": TARGET,
        "group": GROUP,
        "params": dict(sorted(params.items())),
        "sklearn": sklearn.__version__,
        "rows": [
            [run_id, group, *feats, float(t)]
            for run_id, group, feats, t in zip(
                data.run_ids, data.groups.tolist(), data.X.itertuples(index=False), data.y, strict=True
            )
        ],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_model(params: Mapping[str, Any] = DEFAULT_PARAMS) -> Any:
    """The unfitted pipeline: ordinal-encode CATEGORICAL (unknown -> missing), pass NUMERIC, boosted trees."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
                list(CATEGORICAL),
            ),
            ("numeric", "passthrough", list(NUMERIC)),
        ]
    )
    trees = HistGradientBoostingRegressor(categorical_features=list(range(len(CATEGORICAL))), **params)
    return Pipeline([("encode", encode), ("trees", trees)])


@dataclass
class Fold:
    """One leave-one-molecule-out fold: the held-out molecule, the molecules trained on, MAE (decades)."""

    molecule: str
    train_molecules: list[str]
    n_train: int
    n_test: int
    mae: float
    baseline_mae: float


@dataclass
class CvResult:
    """Per-fold results and their means (MAE in decades of milli-hartree error)."""

    folds: list[Fold]
    mae_mean: float
    baseline_mae_mean: float
    runs: int
    molecules: int


def cross_validate(data: TrainingData, params: Mapping[str, Any] = DEFAULT_PARAMS) -> CvResult:
    """Leave-one-molecule-out CV of ``make_model(params)``; ValueError when fewer than 2 molecules."""
    from sklearn.model_selection import LeaveOneGroupOut
    from threadpoolctl import threadpool_limits

    molecules = data.molecules
    if len(molecules) < 2:
        raise ValueError(
            f"convergence model: leave-one-molecule-out needs runs of at least 2 molecules with an exact "
            f"reference; ml_run_summary has {len(data.y)} such run(s) of {molecules or 'no molecule'}"
        )
    folds = []
    for train, test in LeaveOneGroupOut().split(data.X, data.y, data.groups):
        with threadpool_limits(limits=FIT_THREADS):
            model = make_model(params).fit(data.X.iloc[train], data.y[train])
            predicted = model.predict(data.X.iloc[test])
        folds.append(
            Fold(
                molecule=str(data.groups[test[0]]),
                train_molecules=sorted(set(data.groups[train].tolist())),
                n_train=len(train),
                n_test=len(test),
                mae=float(np.mean(np.abs(predicted - data.y[test]))),
                baseline_mae=float(np.mean(np.abs(data.y[train].mean() - data.y[test]))),
            )
        )
    return CvResult(
        folds=folds,
        mae_mean=float(np.mean([f.mae for f in folds])),
        baseline_mae_mean=float(np.mean([f.baseline_mae for f in folds])),
        runs=len(data.y),
        molecules=len(molecules),
    )


@dataclass
class Verdict:
    """Whether a version's mean CV MAE stayed within the margin of the previous version's."""

    passed: bool
    current_mae: float
    previous_mae: float | None
    allowed_mae: float | None
    message: str


def regression_verdict(current_mae: float, previous_mae: float | None) -> Verdict:
    """Fails when ``current_mae`` > previous + max(REGRESSION_MARGIN_REL * previous, REGRESSION_MARGIN_ABS)."""
    if previous_mae is None:
        return Verdict(True, current_mae, None, None, "no previous version: nothing to compare")
    allowed = previous_mae + max(REGRESSION_MARGIN_REL * previous_mae, REGRESSION_MARGIN_ABS)
    passed = current_mae <= allowed
    word = "within" if passed else "regressed beyond"
    return Verdict(
        passed,
        current_mae,
        previous_mae,
        allowed,
        f"CV MAE {current_mae:.4f} {word} the allowed {allowed:.4f} (previous {previous_mae:.4f}) decades",
    )


@dataclass
class StoredModel:
    """Where a version lives in S3, its metrics, and whether it was reused (already stored) or trained."""

    version: str
    model_key: str
    metrics_key: str
    metrics: dict[str, Any]
    reused: bool
    bucket: str
    duration_s: float = 0.0


def _get_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def _put_json(s3: Any, bucket: str, key: str, value: Mapping[str, Any]) -> None:
    body = json.dumps(value, indent=1, sort_keys=True).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def latest_metrics(s3: Any, bucket: str, prefix: str = DEFAULT_PREFIX) -> dict[str, Any] | None:
    """Metrics of the version ``<prefix>latest.json`` points at (None before the first version)."""
    latest = _get_json(s3, bucket, f"{prefix}latest.json")
    return _get_json(s3, bucket, latest["metrics_key"]) if latest else None


def train_and_store(
    rows: Sequence[Mapping[str, Any]],
    s3: Any,
    bucket: str,
    prefix: str = DEFAULT_PREFIX,
    params: Mapping[str, Any] = DEFAULT_PARAMS,
) -> StoredModel:
    """Cross-validate, fit on all rows, store the artefact and metrics under the version's key and point
    ``latest.json`` at it. A version already stored is reused (no training; ``reused=True``).

    ``s3`` is a boto3 client (``qp_assets.s3``: bounded timeouts). The metrics JSON holds the CV result,
    runs, molecules, parameters, features and the previous version with its mean CV MAE.
    """
    import time

    import joblib
    import sklearn
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    data = training_data(rows)
    version = model_version(data, params)
    model_key, metrics_key = f"{prefix}{version}/model.joblib", f"{prefix}{version}/metrics.json"
    previous = latest_metrics(s3, bucket, prefix)
    stored = _get_json(s3, bucket, metrics_key)
    reused = stored is not None
    if stored is None:
        cv = cross_validate(data, params)
        with threadpool_limits(limits=FIT_THREADS):
            model = make_model(params).fit(data.X, data.y)
        buf = io.BytesIO()
        joblib.dump(model, buf)
        s3.put_object(Bucket=bucket, Key=model_key, Body=buf.getvalue())
        stored = {
            "version": version,
            "trained_at": datetime.now(UTC).isoformat(),
            "model_key": model_key,
            "cv": asdict(cv),
            "cv_mae_mean": cv.mae_mean,
            "baseline_mae_mean": cv.baseline_mae_mean,
            "runs": cv.runs,
            "molecules": cv.molecules,
            "target": TARGET,
            "features": [*CATEGORICAL, *NUMERIC],
            "params": dict(params),
            "sklearn": sklearn.__version__,
            "previous_version": previous["version"] if previous and previous["version"] != version else None,
            "previous_cv_mae_mean": (
                previous["cv_mae_mean"] if previous and previous["version"] != version else None
            ),
        }
        _put_json(s3, bucket, metrics_key, stored)
    _put_json(s3, bucket, f"{prefix}latest.json", {"version": version, "metrics_key": metrics_key})
    return StoredModel(
        version, model_key, metrics_key, stored, reused, bucket, round(time.monotonic() - started, 3)
    )


def load_model(s3: Any, bucket: str, model_key: str) -> Any:
    """The fitted pipeline stored at ``model_key`` (predicts the target from a DataFrame of features)."""
    import joblib

    return joblib.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=model_key)["Body"].read()))


def synthetic_run_summary(molecules: int = 8, runs_per_molecule: int = 24, seed: int = 0) -> list[dict]:
    """ml_run_summary-like rows with a known structure, for tests and the documented figures.

    Molecule ``M<i>`` has ``4 + 2 * ((i // 2) % 4)`` qubits (every size twice, so a held-out molecule has
    a twin of its size in training); log10 of the error (mHa) is
    ``-2 + 0.25 * (qubits - 4) + OPTIMIZER_EFFECT + (0.5 if initial_state == 'random' else 0)`` plus
    Gaussian noise of 0.05 decades: a model of the configuration can predict it, a constant cannot.
    """
    rng = random.Random(seed)
    effects = {"L-BFGS-B": 0.0, "SLSQP": 0.2, "COBYLA": 0.8, "SPSA": 1.2}
    rows = []
    for m in range(molecules):
        qubits = 4 + 2 * ((m // 2) % 4)
        for k in range(runs_per_molecule):
            optimizer = list(effects)[k % len(effects)]
            initial = ("hartree_fock", "random")[(k // len(effects)) % 2]
            log_err = -2 + 0.25 * (qubits - 4) + effects[optimizer] + (0.5 if initial == "random" else 0.0)
            rows.append(
                {
                    "run_id": f"syn-{m:02d}-{k:04d}",
                    GROUP: f"M{m}",
                    "basis": "sto3g",
                    "mapper": "jordan_wigner",
                    "ansatz_name": "uccsd",
                    "initial_state": initial,
                    "optimizer_name": optimizer,
                    "backend_method": "statevector",
                    "ansatz_reps": 1,
                    "num_qubits": qubits,
                    "num_parameters": qubits * (qubits - 2) // 4,
                    "max_iterations": 500,
                    "shots": None,
                    "error_vs_exact_mha": 10 ** (log_err + rng.gauss(0.0, 0.05)),
                }
            )
    return rows
