"""The admission policy (qp_assets/vqe/admission.py) without services: limits, refusals, sizes, wall clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qp_assets.vqe.admission import AdmissionLimits, WallClock, admit, admit_request, check_raw_molecule
from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.molecule import Molecule, load_molecules

BENZENE = {
    "name": "benzene",
    "symbols": ["C"] * 6 + ["H"] * 6,
    "coords": [[0.0, 1.397, 0.0], [1.2098, 0.6985, 0.0], [1.2098, -0.6985, 0.0], [0.0, -1.397, 0.0],
               [-1.2098, -0.6985, 0.0], [-1.2098, 0.6985, 0.0], [0.0, 2.481, 0.0], [2.1486, 1.2405, 0.0],
               [2.1486, -1.2405, 0.0], [0.0, -2.481, 0.0], [-2.1486, -1.2405, 0.0], [-2.1486, 1.2405, 0.0]],
}  # fmt: skip
H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}


def test_limits_defaults_env_and_bad_values_name_the_variable() -> None:
    assert AdmissionLimits.from_env({}) == AdmissionLimits()
    assert AdmissionLimits().max_qubits == 28 and AdmissionLimits().max_wall_s == 3600.0
    limits = AdmissionLimits.from_env({"QP_MAX_QUBITS": "20", "QP_MAX_WALL_S": "2.5", "QP_MAX_SHOTS": ""})
    assert (limits.max_qubits, limits.max_wall_s, limits.max_shots) == (20, 2.5, 1_000_000)
    for var, value in (("QP_MAX_QUBITS", "abc"), ("QP_MAX_ATOMS", "0"), ("QP_MAX_REPS", "1.5"),
                       ("QP_MAX_WALL_S", "nan"), ("QP_MAX_MEMORY_GIB", "-1"), ("QP_MAX_ITERATIONS", "inf")):  # fmt: skip
        with pytest.raises(ValueError, match=f"{var}={value!r}: "):
            AdmissionLimits.from_env({var: value})


def test_benzene_is_refused_at_72_qubits_without_scf_in_well_under_a_second() -> None:
    molecule = Molecule.from_dict(BENZENE)
    admit(Molecule.from_dict(H2), VQEConfig())  # warm PySCF import
    t0 = time.perf_counter()
    with pytest.raises(
        InputError, match=r"molecule benzene: field 'num_qubits' = 72 .*36 spatial orbitals.*QP_MAX_QUBITS"
    ):
        admit(molecule, VQEConfig())
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    ("name", "freeze_core"), [("LiH", False), ("LiH", True), ("H2O", True), ("N2", False), ("N2", True)]
)
def test_sizes_match_what_the_engine_builds(name: str, freeze_core: bool) -> None:
    """Orbitals / electrons / qubits from the basis size agree with the engine's problem (real SCF)."""
    from qp_assets.vqe.hamiltonian import build_problem

    molecule = load_molecules()[name]
    config = VQEConfig(freeze_core=freeze_core)
    a = admit(molecule, config)
    problem = build_problem(molecule, config)
    assert (a.num_spatial_orbitals, a.num_electrons, a.num_qubits) == (
        problem.num_spatial_orbitals, sum(problem.num_particles), problem.num_qubits,
    )  # fmt: skip
    assert a.kernel == "sector"


def test_memory_uses_the_engine_estimators_and_is_capped() -> None:
    from qp_assets.vqe import sector_kernel
    from qp_assets.vqe.simulator import estimate_memory_bytes

    n2 = load_molecules()["N2"]
    sector = admit(n2, VQEConfig())
    space = sector_kernel.SectorSpace(10, 7, 7)
    assert sector.memory_bytes == sector_kernel.estimate_memory_bytes(space, 0)
    aer = admit(n2, VQEConfig(kernel="aer"))
    assert aer.kernel == "aer" and aer.memory_bytes == estimate_memory_bytes(20, None, 0, True)
    with pytest.raises(
        InputError,
        match=r"molecule N2: field 'num_qubits' = 20 needs about .* GiB on the sector kernel.*QP_MAX_MEMORY_GIB",
    ):
        admit(n2, VQEConfig(), AdmissionLimits(max_memory_gib=0.01))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (
            {"max_iterations": 10**6},
            r"config: field 'max_iterations' = 1000000 exceeds .* 10000 \(QP_MAX_ITERATIONS\)",
        ),
        ({"shots": 10**12}, r"config: field 'shots' = 1000000000000 exceeds .*QP_MAX_SHOTS"),
        ({"reps": 1000}, r"config: field 'reps' = 1000 exceeds .*QP_MAX_REPS"),
        ({"max_evaluations": 10**9}, r"config: field 'max_evaluations' = 1000000000 .*QP_MAX_EVALUATIONS"),
        ({"basis": "no-such-basis"}, r"molecule H2: field 'basis' = 'no-such-basis'"),
        ({"ansatz": "qaoa"}, r"config: field 'ansatz' has unknown value 'qaoa'"),
    ],
)
def test_request_budgets_and_names_are_refused_naming_field_and_value(fields: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        admit_request({"request_id": "r", "molecule": H2, **fields}, AdmissionLimits())


def test_ten_thousand_atoms_are_refused_before_the_quadratic_molecule_validation() -> None:
    huge = {"name": "blob", "symbols": ["H"] * 10_000, "coords": [[i * 1.0, 0, 0] for i in range(10_000)]}
    t0 = time.perf_counter()
    with pytest.raises(
        InputError, match=r"molecule blob: field 'symbols' = '10000 atoms' exceeds .*50 \(QP_MAX_ATOMS\)"
    ):
        admit_request({"request_id": "r", "molecule": huge}, AdmissionLimits())
    assert time.perf_counter() - t0 < 0.5
    check_raw_molecule(H2, AdmissionLimits())


def test_wall_clock_stops_a_run_between_iterations_with_the_reason() -> None:
    from qp_assets.vqe.runner import run_vqe

    molecule = load_molecules()["LiH"]
    result = run_vqe(molecule, VQEConfig(seed=1), progress=False, on_iteration=WallClock(0.0).check)
    assert result.optimizer_result["success"] is False
    assert len(result.iterations) == 1
    assert "wall-clock limit 0 s (QP_MAX_WALL_S)" in result.optimizer_result["message"]


def test_qp_request_submit_refuses_benzene_with_exit_2_in_seconds(tmp_path: Path) -> None:
    """Kafka is pointed at a closed port: a refusal must come before any connection is tried."""
    path = tmp_path / "benzene.json"
    path.write_text(json.dumps([BENZENE]))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qp_assets.cli", "request", "submit", "--molecules-file", str(path), "-m", "benzene"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "QP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "QP_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    print(f"\nqp request submit benzene (72 qubits): exit {proc.returncode} in {elapsed:.2f} s")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("qp request submit: error: molecule benzene: field 'num_qubits' = 72")
    assert "QP_MAX_QUBITS" in proc.stderr
    assert elapsed < 15


def test_qp_vqe_run_refuses_before_scf_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "benzene.json"
    path.write_text(json.dumps(BENZENE))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qp_assets.cli", "vqe", "run", "--molecule-json", f"@{path}", "--no-progress", "--no-monitor"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2 and "field 'num_qubits' = 72" in proc.stderr, proc.stdout + proc.stderr
    assert elapsed < 15
    bad_env = subprocess.run(
        [sys.executable, "-m", "qp_assets.cli", "vqe", "run", "-m", "H2", "--no-progress", "--no-monitor"],
        capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "QP_MAX_WALL_S": "soon"},
    )  # fmt: skip
    assert (
        bad_env.returncode == 2 and "QP_MAX_WALL_S='soon': Input should be a valid number" in bad_env.stderr
    )
