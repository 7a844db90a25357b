"""The convergence model's own logic on synthetic data (no services, no JVM): leave-one-molecule-out CV,
content-hash versions, the regression verdict, the training frame."""

from __future__ import annotations

import math
import random

import pytest

from qp_assets.features import model

#: Small and quick: 30 trees instead of 100 (a fit of ~50 runs takes a few ms).
PARAMS = {**model.DEFAULT_PARAMS, "max_iter": 30}


def test_lomo_cv_holds_out_each_molecule_once_and_learns_the_known_structure():
    rows = model.synthetic_run_summary(molecules=4, runs_per_molecule=16)
    data = model.training_data(rows)
    cv = model.cross_validate(data, PARAMS)
    assert (cv.runs, cv.molecules) == (64, 4)
    assert [f.molecule for f in cv.folds] == ["M0", "M1", "M2", "M3"]
    for fold in cv.folds:  # the held-out molecule is never trained on; every other one is
        assert fold.train_molecules == sorted({"M0", "M1", "M2", "M3"} - {fold.molecule})
        assert (fold.n_train, fold.n_test) == (48, 16)
    assert cv.mae_mean == pytest.approx(sum(f.mae for f in cv.folds) / 4)
    # log10 error = f(qubits, optimizer, initial state) + 0.05-decade noise: trees get close, a constant not
    assert cv.mae_mean < 0.15 and cv.baseline_mae_mean > 0.5


def test_lomo_cv_cannot_learn_what_only_the_held_out_molecule_knows():
    """Each molecule has its own qubit count and a random error level: only a leak of the held-out
    molecule into training could predict it. In-sample the same trees fit it almost exactly."""
    rng = random.Random(7)
    rows = []
    for m in range(5):
        level = rng.uniform(-3, 1)
        for k in range(12):
            rows.append(
                {**model.synthetic_run_summary(1, 1)[0], "run_id": f"r{m}-{k}", "molecule_name": f"X{m}"}
                | {"num_qubits": 4 + 2 * m, "error_vs_exact_mha": 10**level}
            )
    data = model.training_data(rows)
    cv = model.cross_validate(data, {**PARAMS, "min_samples_leaf": 2})
    assert cv.mae_mean > 0.5 * cv.baseline_mae_mean > 0.2
    fitted = model.make_model({**PARAMS, "min_samples_leaf": 2}).fit(data.X, data.y)
    assert abs(fitted.predict(data.X) - data.y).mean() < 0.05


def test_cv_needs_two_molecules():
    rows = [r for r in model.synthetic_run_summary(2, 8) if r["molecule_name"] == "M0"]
    with pytest.raises(ValueError, match=r"at least 2 molecules .* 8 such run\(s\) of \['M0'\]"):
        model.cross_validate(model.training_data(rows), PARAMS)


def test_training_frame_target_and_missing_values():
    base = model.synthetic_run_summary(1, 1)[0]
    rows = [
        {**base, "run_id": "b", "error_vs_exact_mha": -0.01, "shots": 1000, "mapper": None},
        {**base, "run_id": "a", "error_vs_exact_mha": 0.0},
        {**base, "run_id": "c", "error_vs_exact_mha": None},  # no exact reference: not a training row
        {**base, "run_id": "d", "molecule_name": None},
    ]
    data = model.training_data(rows)
    assert data.run_ids == ["a", "b"]  # sorted by run id
    assert list(data.y) == [math.log10(model.ERROR_FLOOR_MHA), -2.0]  # |error|, floored
    assert list(data.X.columns) == [*model.CATEGORICAL, *model.NUMERIC]
    assert data.X["shots"].tolist() == [model.MISSING_NUMERIC, 1000.0]
    assert data.X["mapper"].tolist() == ["jordan_wigner", "<none>"]


def test_version_is_a_content_hash_of_data_and_parameters():
    rows = model.synthetic_run_summary(2, 6)
    version = model.model_version(model.training_data(rows), PARAMS)
    assert len(version) == 16 and int(version, 16) >= 0
    shuffled = list(reversed(rows))
    assert model.model_version(model.training_data(shuffled), PARAMS) == version
    changed = [dict(r) for r in rows]
    changed[3]["error_vs_exact_mha"] *= 1.001
    assert model.model_version(model.training_data(changed), PARAMS) != version
    assert model.model_version(model.training_data(rows), {**PARAMS, "max_iter": 31}) != version


@pytest.mark.parametrize(
    ("current", "previous", "passed", "allowed"),
    [
        (0.40, None, True, None),  # first version
        (0.20, 0.25, True, 0.275),  # better
        (0.27, 0.25, True, 0.275),  # worse, within 10 %
        (0.28, 0.25, False, 0.275),  # worse by more than 10 %
        (0.069, 0.05, True, 0.07),  # small errors: the 0.02-decade floor
        (0.071, 0.05, False, 0.07),
    ],
)
def test_regression_verdict(current, previous, passed, allowed):
    verdict = model.regression_verdict(current, previous)
    assert verdict.passed is passed
    assert verdict.allowed_mae == (pytest.approx(allowed) if allowed is not None else None)
    if not passed:
        assert "regressed beyond" in verdict.message and f"{current:.4f}" in verdict.message


def test_cli_knows_the_ml_tables(capsys):
    """``qp features tables / describe / show`` accept the two ML tables next to the ten."""
    import json

    from qp_assets.cli import main
    from qp_assets.features.catalog import check_table_name
    from qp_assets.features.ml_tables import ML_TABLES

    assert check_table_name("ml_run_summary") == "ml_run_summary"
    with pytest.raises(SystemExit) as info:
        main(["features", "describe", "ml_run_summary", "--json"])
    assert info.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["column"] for r in rows] == ML_TABLES["ml_run_summary"].schema.names
    by_column = {r["column"]: r["description"] for r in rows}
    assert by_column["convergence_iteration"].startswith("First iteration whose energy lies within 1.6")
    with pytest.raises(SystemExit) as info:
        main(["features", "tables"])
    out = capsys.readouterr().out
    assert "ml_iteration_features" in out and "vqe_iterations, vqe_results" in out
