"""The electron-sector kernel: agreement with Aer on the same circuits, exact references, selection rules."""

from __future__ import annotations

import numpy as np
import pytest

from qp_assets.vqe.ansatz import build_ansatz, sector_ansatz
from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.exact import sector_hamiltonian, sector_states
from qp_assets.vqe.hamiltonian import build_problem
from qp_assets.vqe.molecule import load_molecules
from qp_assets.vqe.runner import run_vqe
from qp_assets.vqe.sector_kernel import (
    SectorEnergyEvaluator,
    SectorHamiltonian,
    SectorSpace,
    estimate_memory_bytes,
)
from qp_assets.vqe.simulator import AerEnergyEvaluator
from qp_assets.vqe.simulator import estimate_memory_bytes as aer_memory_bytes

MOLS = load_molecules()


def _setup(name: str, **cfg):
    config = VQEConfig(**cfg)
    problem = build_problem(MOLS[name], config)
    circuit = build_ansatz(problem, config)
    return problem, circuit, sector_ansatz(circuit, problem)


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("H2", {"mapper": "parity", "reps": 2}),
        ("HeH+", {"ansatz": "succd", "mapper": "bravyi_kitaev"}),
        ("LiH", {"freeze_core": True}),
        ("LiH", {"freeze_core": True, "mapper": "bravyi_kitaev"}),
        ("LiH", {"freeze_core": True, "mapper": "parity", "ansatz": "puccd", "reps": 2}),
        ("LiH", {"freeze_core": True, "ansatz": "succd"}),
        ("H2O", {"freeze_core": True}),
    ],
)
def test_sector_kernel_agrees_with_aer_on_the_same_circuit(name, cfg):
    problem, circuit, sector = _setup(name, **cfg)
    assert sector is not None
    kernel = SectorEnergyEvaluator(sector, SectorHamiltonian(sector.space, *problem.integrals))
    aer = AerEnergyEvaluator(circuit, problem.qubit_op)
    theta = np.random.default_rng(3).uniform(-0.4, 0.4, circuit.num_parameters)
    e_kernel, g_kernel = kernel.energy_and_gradient(theta)
    e_aer, g_aer = aer.energy_and_gradient(theta)
    assert abs(e_kernel - e_aer) <= 1e-10
    np.testing.assert_allclose(g_kernel, g_aer, rtol=0, atol=1e-10)
    assert abs(e_kernel - kernel.energy_exact(theta)) == 0.0
    # the embedded sector state is Aer's statevector up to a global phase
    full = sector.space.to_qubit_statevector(sector.state(theta))
    if cfg.get("mapper") is None:  # Jordan-Wigner: same qubit basis
        assert abs(abs(np.vdot(aer.statevector(theta), full)) - 1.0) <= 1e-10


def test_sector_gradient_matches_finite_differences():
    problem, circuit, sector = _setup("LiH", freeze_core=True)
    ev = SectorEnergyEvaluator(sector, SectorHamiltonian(sector.space, *problem.integrals))
    theta = np.random.default_rng(5).uniform(-0.3, 0.3, circuit.num_parameters)
    _, grad = ev.energy_and_gradient(theta)
    eps = 1e-6
    fd = [
        (ev.energy_exact(theta + eps * e) - ev.energy_exact(theta - eps * e)) / (2 * eps) for e in np.eye(24)
    ]
    np.testing.assert_allclose(grad, fd, atol=1e-8)


def test_sector_hamiltonian_equals_jordan_wigner_operator_on_the_sector():
    problem, _, _ = _setup("H2O", freeze_core=True)
    space = SectorSpace(problem.num_spatial_orbitals, *problem.num_particles)
    ham = SectorHamiltonian(space, *problem.integrals)
    states = sector_states(space.norb, (space.nalpha, space.nbeta))
    jw = sector_hamiltonian(problem.qubit_op, states).toarray().real
    # map sorted JW states to PySCF's (alpha, beta) string order
    pyscf_index = (space.alpha_strings[:, None] | (space.beta_strings[None, :] << space.norb)).ravel()
    perm = np.searchsorted(states, pyscf_index)
    assert space.dim == 225
    psi = np.random.default_rng(2).normal(size=space.shape)
    np.testing.assert_allclose(ham.apply(psi).ravel(), jw[np.ix_(perm, perm)] @ psi.ravel(), atol=1e-12)
    energy, method = ham.ground_energy()
    assert energy + problem.energy_shift == pytest.approx(MOLS["H2O"].extra["e_fci_frozen_core"], abs=1e-7)
    assert method == "fci_davidson_sector"


@pytest.mark.parametrize(
    ("name", "error_mha"), [("LiH", 0.0), ("H2O", 0.1006), ("NH3", 0.1766)]
)  # the UCCSD limits measured on Aer before this kernel existed
def test_default_run_uses_the_sector_kernel_and_reaches_the_references(name, error_mha):
    result = run_vqe(MOLS[name], VQEConfig(freeze_core=True), progress=False)
    assert result.package_versions["kernel"] == "sector"
    assert result.exact_energy == pytest.approx(MOLS[name].extra["e_fci_frozen_core"], abs=1e-7)
    assert result.error_vs_exact_mha == pytest.approx(error_mha, abs=2e-3)
    assert result.optimizer_result["success"]
    assert 5 <= result.optimizer_result["nit"] <= 12
    assert all(it["gradient_norm"] is not None for it in result.iterations)


def test_sector_and_aer_runs_follow_the_same_optimizer_path():
    mol, cfg = MOLS["LiH"], {"freeze_core": True, "initial_state": "random", "seed": 4}
    sector = run_vqe(mol, VQEConfig(**cfg), progress=False)
    aer = run_vqe(mol, VQEConfig(kernel="aer", **cfg), progress=False)
    assert (sector.package_versions["kernel"], aer.package_versions["kernel"]) == ("sector", "aer")
    assert sector.experiment_id == aer.experiment_id  # the kernel does not define the experiment
    assert sector.optimizer_result["nit"] == aer.optimizer_result["nit"]
    assert sector.total_energy == pytest.approx(aer.total_energy, abs=1e-9)
    np.testing.assert_allclose(sector.energies, aer.energies, atol=1e-9)


@pytest.mark.parametrize(
    ("cfg", "reason"),
    [
        ({"shots": 100}, "shots = 100"),
        ({"ansatz": "efficient_su2"}, "not a product of excitation rotations"),
        ({"backend_method": "mps"}, "backend_method = 'matrix_product_state'"),
    ],
)
def test_kernel_sector_refuses_runs_it_cannot_do_and_auto_falls_back_to_aer(cfg, reason):
    with pytest.raises(InputError, match=rf"field 'kernel' = 'sector' is not possible here: .*{reason}"):
        run_vqe(MOLS["H2"], VQEConfig(kernel="sector", max_iterations=2, **cfg), progress=False)
    result = run_vqe(MOLS["H2"], VQEConfig(max_iterations=2, **cfg), progress=False)
    assert result.package_versions["kernel"] == "aer"


def test_kernel_name_is_validated():
    with pytest.raises(
        InputError, match=r"field 'kernel' has unknown value 'fast'; valid: auto, sector, aer"
    ):
        VQEConfig(kernel="fast")


def test_memory_estimate_uses_the_sector_dimension():
    co2 = SectorSpace(12, 8, 8)  # CO2 frozen core: 24 qubits
    assert co2.dim == 245_025
    assert estimate_memory_bytes(co2, tables_bytes=7 * 2**20) < 2**30  # ~0.5 GiB
    from qiskit.quantum_info import SparsePauliOp

    one_term = SparsePauliOp("Z" * 24)
    assert aer_memory_bytes(24, one_term, 1424 * 50, shots=False) > 1000 * 2**30  # the qubit engine's need
