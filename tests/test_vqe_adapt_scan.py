"""ADAPT-VQE on the sector kernel and potential-energy scans (``qp vqe scan``)."""

from __future__ import annotations

import io
import json

import fastavro
import numpy as np
import pytest

from qp_assets.cli import main as qp_main
from qp_assets.vqe.adapt import sector_ansatz_for, singles_doubles_pool
from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.hamiltonian import build_problem
from qp_assets.vqe.molecule import load_molecules
from qp_assets.vqe.result import load_schema
from qp_assets.vqe.runner import run_vqe
from qp_assets.vqe.scan import (
    MIN_STEP,
    STEP_SAFETY,
    extrapolate,
    extrapolation_error,
    run_scan,
    scan_distances,
    stretched,
)
from qp_assets.vqe.sector_kernel import (
    SectorEnergyEvaluator,
    SectorHamiltonian,
    SectorSpace,
    append_gradients,
    build_tables,
)

MOLS = load_molecules()


def test_pool_gradients_equal_the_derivative_of_appending_each_operator():
    problem = build_problem(MOLS["LiH"], VQEConfig(freeze_core=True))
    space = SectorSpace(problem.num_spatial_orbitals, *problem.num_particles)
    ham = SectorHamiltonian(space, *problem.integrals)
    pool = singles_doubles_pool(space)
    assert len(pool) == 24  # the UCCSD excitations of LiH fc
    chosen = [pool[5], pool[17]]
    theta = np.array([0.2, -0.1])
    psi = sector_ansatz_for(space, chosen).state(theta)
    grads = append_gradients(build_tables(space, pool, list(range(len(pool)))), psi, ham.apply(psi))
    eps = 1e-6
    for k in (0, 9, 23):
        ev = SectorEnergyEvaluator(sector_ansatz_for(space, [*chosen, pool[k]]), ham)
        fd = (ev.energy_exact(np.append(theta, eps)) - ev.energy_exact(np.append(theta, -eps))) / (2 * eps)
        assert grads[k] == pytest.approx(fd, abs=1e-8)


def test_adapt_reaches_the_exact_energy_and_records_each_operator():
    cfg = VQEConfig(freeze_core=True, ansatz="adapt", adapt_gradient_threshold=1e-4, adapt_max_operators=30)
    result = run_vqe(MOLS["LiH"], cfg, progress=False)
    assert result.exact_energy == pytest.approx(MOLS["LiH"].extra["e_fci_frozen_core"], abs=1e-7)
    assert abs(result.error_vs_exact_mha) < 0.01
    assert result.optimizer_result["success"]
    assert "converged: largest pool gradient" in result.optimizer_result["message"]
    its = result.iterations
    assert 3 <= len(its) <= 30
    assert [len(it["parameters"]) for it in its] == list(range(1, len(its) + 1))  # one operator per step
    assert all("->" in it["operator"] for it in its)
    assert all(b["energy"] <= a["energy"] + 1e-10 for a, b in zip(its, its[1:], strict=False))
    assert result.adapt == {
        "gradient_threshold": 1e-4, "max_operators": 30, "operators": [it["operator"] for it in its]
    }  # fmt: skip
    assert "adapt_operators" not in json.loads(result.optimizer["options_json"])  # one home: the adapt record
    assert result.ansatz["num_parameters"] == len(its) and result.ansatz["name"] == "adapt"
    assert result.backend["kernel"] == result.package_versions["kernel"] == "sector"
    assert "OPENQASM 3" in result.ansatz["circuit_qasm3"]
    # the v4 record carries the ADAPT fields and operators through Avro
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(), result.to_record())
    back = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), load_schema())
    assert [it["operator"] for it in back["iterations"]] == [it["operator"] for it in its]
    assert back["adapt"] == result.adapt


def test_adapt_stops_at_the_operator_budget():
    cfg = VQEConfig(freeze_core=True, ansatz="adapt", adapt_max_operators=2)
    result = run_vqe(MOLS["LiH"], cfg, progress=False)
    assert not result.optimizer_result["success"]
    assert result.optimizer_result["message"].startswith("stopped: max_operators (2) reached")
    assert len(result.iterations) == 2 and len(result.optimal_parameters) == 2


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"kernel": "aer"}, "field 'kernel' = 'aer' is not possible with ansatz 'adapt'"),
        ({"shots": 100}, "field 'ansatz' = 'adapt' is not possible here: shots = 100"),
        ({"initial_state": "random"}, "field 'initial_state' = 'random' is not allowed with ansatz 'adapt'"),
        ({"adapt_gradient_threshold": 0}, "field 'adapt_gradient_threshold' must be a number > 0"),
        ({"adapt_max_operators": 0}, "field 'adapt_max_operators' must be an integer >= 1"),
    ],
)
def test_adapt_bad_input_names_the_field(cfg, message):
    with pytest.raises(InputError, match=message):
        run_vqe(MOLS["H2"], VQEConfig(ansatz="adapt", **cfg), progress=False)


def test_adapt_settings_only_change_adapt_experiment_ids():
    mol_key = {"symbols": ["H", "H"]}
    from qp_assets.vqe.config import experiment_id

    assert experiment_id(mol_key, VQEConfig(adapt_max_operators=5)) == experiment_id(mol_key, VQEConfig())
    assert experiment_id(mol_key, VQEConfig(ansatz="adapt", adapt_max_operators=5)) != experiment_id(
        mol_key, VQEConfig(ansatz="adapt")
    )


def test_stretched_sets_the_distance_and_rejects_bad_indices():
    h2o = stretched(MOLS["H2O"], 0, 2, 1.25)
    coords = np.array(h2o.coords_angstrom)
    assert np.linalg.norm(coords[2] - coords[0]) == pytest.approx(1.25, abs=1e-12)
    np.testing.assert_allclose(coords[:2], np.array(MOLS["H2O"].coords_angstrom)[:2])
    with pytest.raises(InputError, match=r"field 'stretch' = 0,3 must be two different atom indices in 0..2"):
        stretched(MOLS["H2O"], 0, 3, 1.0)


def test_extrapolation_is_exact_for_polynomials_of_its_degree():
    ds = [0.5, 0.6, 0.7]
    xs = [np.array([d**2, 1 - d]) for d in ds]
    np.testing.assert_allclose(extrapolate(ds, xs, 0.8), [0.64, 0.2], atol=1e-12)
    np.testing.assert_allclose(extrapolate(ds[-1:], xs[-1:], 0.8), xs[-1])


def test_warm_scan_is_exact_and_uses_half_the_iterations_of_cold():
    distances = scan_distances(0.5, 2.5, 21)  # the scan (about 2 s for both)
    warm = run_scan(MOLS["H2"], VQEConfig(), 0, 1, distances)["points"]
    cold = run_scan(MOLS["H2"], VQEConfig(), 0, 1, distances, warm_start=False)["points"]
    assert [p["initial_point"] for p in warm] == ["cold"] + ["warm"] * 20
    assert {p["initial_point"] for p in cold} == {"cold"}
    for w, c in zip(warm, cold, strict=True):
        assert abs(w["error_vs_exact_mha"]) < 1e-3 and abs(c["error_vs_exact_mha"]) < 1e-3
        assert w["total_energy"] == pytest.approx(c["total_energy"], abs=1e-8)
    assert warm[2]["total_energy"] == pytest.approx(-1.13618945, abs=1e-7)  # H2 FCI at 0.7 angstrom
    warm_its, cold_its = (sum(p["num_iterations"] for p in scan) for scan in (warm, cold))
    assert cold_its >= 2 * warm_its, (warm_its, cold_its)  # 24 vs 69 on 2026-11-29


def test_warm_start_step_is_the_extrapolation_error_estimate():
    ds = [0.5, 0.6, 0.7]
    xs = [np.array([d**3, 1.0]) for d in ds]
    assert extrapolation_error(ds[:1], xs[:1], 0.8) is None  # one optimum: no estimate
    # quadratic through three points vs linear through the last two, times the safety factor: |0.506 - 0.470|
    assert extrapolation_error(ds, xs, 0.8) == pytest.approx(STEP_SAFETY * 0.036, rel=1e-9)
    assert extrapolation_error(ds, [np.zeros(2)] * 3, 0.8) == MIN_STEP


def test_scan_command_writes_points_json(capsys):
    with pytest.raises(SystemExit) as done:
        qp_main(["vqe", "scan", "-m", "H2", "--stretch", "0,1", "--from", "0.7", "--to", "0.9", "--points", "3",
                 "--json", "-"])  # fmt: skip
    assert done.value.code == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [round(p["distance"], 6) for p in points] == [0.7, 0.8, 0.9]
    for p in points:
        assert set(p) >= {"distance", "total_energy", "exact_energy", "error_vs_exact_mha", "num_iterations"}
        assert abs(p["error_vs_exact_mha"]) < 1e-3


def test_initial_point_of_the_wrong_length_is_refused():
    with pytest.raises(InputError, match=r"field 'initial_point' has 2 values; ansatz 'uccsd' starts with 3"):
        run_vqe(MOLS["H2"], VQEConfig(), progress=False, initial_point=np.zeros(2))


def test_step_scale_sizes_lbfgsb_first_step_and_keeps_its_gradient_test():
    from qp_assets.vqe.optimizers import run_scipy

    def energy(x):  # a warm start's energy landscape: E = a - b cos(2 (theta - theta*)) per parameter
        d = x - np.array([0.3, -0.2])
        return float(np.sum(-np.cos(2 * d))), 2 * np.sin(2 * d)

    start = np.array([0.3004, -0.2003])  # 5e-4 rad from the optimum
    plain = run_scipy("L-BFGS-B", energy, start, with_gradient=True, callback=lambda x: None, options={},
                      max_iterations=None, max_evaluations=None)  # fmt: skip
    seen = []
    scaled = run_scipy("L-BFGS-B", energy, start, with_gradient=True, callback=seen.append, options={},
                       max_iterations=None, max_evaluations=None, step_scale=2e-3)  # fmt: skip
    assert scaled.nit < plain.nit and scaled.success
    assert np.max(np.abs(energy(scaled.x)[1])) < 1e-5  # the unscaled gradient test still holds
    np.testing.assert_allclose(scaled.x, [0.3, -0.2], atol=1e-6)
    np.testing.assert_allclose(seen[-1], scaled.x)  # the callback sees parameters, not scaled ones
