"""The convergence model's artefact on the stack's real S3: versioned key, metrics beside it, ``latest.json``,
reuse of a stored version, the previous version recorded for the regression check. Synthetic training rows
(no Spark); everything under a unique prefix, removed after."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from qp_assets.features import model

pytestmark = [pytest.mark.services]

PARAMS = {**model.DEFAULT_PARAMS, "max_iter": 30}


@pytest.fixture
def store(stack):
    from qp_assets.s3 import s3_client

    client = s3_client(stack)
    prefix = f"tests/ml-model-{uuid.uuid4().hex[:10]}/models/convergence_model/"
    yield client, stack.bucket, prefix
    listed = client.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents", [])
    if listed:
        client.delete_objects(Bucket=stack.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})


def test_artefact_and_metrics_land_in_s3_under_the_version(store):
    client, bucket, prefix = store
    rows = model.synthetic_run_summary(molecules=4, runs_per_molecule=16)
    first = model.train_and_store(rows, client, bucket, prefix, PARAMS)
    version = model.model_version(model.training_data(rows), PARAMS)
    assert (first.version, first.reused) == (version, False)
    assert first.model_key == f"{prefix}{version}/model.joblib"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [
        f"{prefix}{version}/metrics.json",
        f"{prefix}{version}/model.joblib",
        f"{prefix}latest.json",
    ]

    metrics = json.loads(client.get_object(Bucket=bucket, Key=first.metrics_key)["Body"].read())
    assert (metrics["version"], metrics["runs"], metrics["molecules"]) == (version, 64, 4)
    assert [f["molecule"] for f in metrics["cv"]["folds"]] == ["M0", "M1", "M2", "M3"]
    assert metrics["cv_mae_mean"] == pytest.approx(np.mean([f["mae"] for f in metrics["cv"]["folds"]]))
    assert metrics["cv_mae_mean"] < 0.15 < metrics["baseline_mae_mean"]
    assert metrics["previous_version"] is None and metrics["params"] == PARAMS

    fitted = model.load_model(client, bucket, first.model_key)  # the stored pipeline predicts the target
    data = model.training_data(rows)
    assert np.abs(fitted.predict(data.X) - data.y).mean() < 0.1

    again = model.train_and_store(list(reversed(rows)), client, bucket, prefix, PARAMS)
    assert (again.version, again.reused, again.metrics) == (version, True, metrics)  # same data: reused

    newer = model.synthetic_run_summary(molecules=4, runs_per_molecule=16, seed=1)
    second = model.train_and_store(newer, client, bucket, prefix, PARAMS)
    assert second.version != version and not second.reused
    latest = model.latest_metrics(client, bucket, prefix)
    assert latest["version"] == second.version
    assert (latest["previous_version"], latest["previous_cv_mae_mean"]) == (version, metrics["cv_mae_mean"])
    verdict = model.regression_verdict(latest["cv_mae_mean"], latest["previous_cv_mae_mean"])
    assert verdict.passed  # same structure, other noise: within the margin
