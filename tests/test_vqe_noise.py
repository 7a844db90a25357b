"""Aer noise models for sampled runs, and the GPU path of UCC runs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from qp_assets.vqe.ansatz import build_ansatz
from qp_assets.vqe.config import VQEConfig
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.hamiltonian import build_problem
from qp_assets.vqe.molecule import load_molecules
from qp_assets.vqe.noise import build_noise_model, parse_noise
from qp_assets.vqe.runner import run_vqe
from qp_assets.vqe.simulator import AerEnergyEvaluator, available_devices

MOLS = load_molecules()


def test_noise_specs_are_normalised_and_bad_ones_name_the_field():
    assert str(parse_noise(" Depolarising:0.001,1e-2 ")) == "depolarizing:0.001,0.01,0"
    assert str(parse_noise("fake:FakeManilaV2")) == "fake:FakeManilaV2"
    for bad in ("depolarizing:0.1", "depolarizing:0.1,2", "thermal:1", "fake:"):
        with pytest.raises(InputError, match=r"field 'noise' = .* is not a noise spec"):
            parse_noise(bad)
    with pytest.raises(InputError, match=r"field 'noise' = 'depolarizing:0.01,0.01,0' needs shots"):
        VQEConfig(noise="depolarizing:0.01,0.01")


def test_depolarizing_noise_raises_the_sampled_energy_of_the_reference_state():
    config = VQEConfig()
    problem = build_problem(MOLS["H2"], config)
    ansatz = build_ansatz(problem, config)
    theta = np.zeros(ansatz.num_parameters)
    clean = AerEnergyEvaluator(ansatz, problem.qubit_op, shots=20_000, seed=1)
    noisy = AerEnergyEvaluator(ansatz, problem.qubit_op, shots=20_000, seed=1, method="density_matrix",
                               noise_model=build_noise_model(parse_noise("depolarizing:0.002,0.05,0.02")))  # fmt: skip
    e_clean, std_clean = clean.energy_sampled(theta)
    e_noisy, std_noisy = noisy.energy_sampled(theta)
    hf_electronic = MOLS["H2"].extra["e_hf"] - problem.energy_shift
    assert abs(e_clean - hf_electronic) < 4 * std_clean + 1e-9  # noiseless: the HF energy, up to sampling
    assert e_noisy - hf_electronic > 0.05 + 4 * std_noisy  # depolarised towards the maximally mixed state


def test_noisy_run_records_the_noise_model_and_runs_on_aer():
    cfg = VQEConfig(
        shots=2000, noise="depolarizing:0.001,0.01,0.02", optimizer="COBYLA", max_iterations=12, seed=5
    )
    result = run_vqe(MOLS["H2"], cfg, progress=False)
    assert (
        result.backend["noise_model"]
        == result.package_versions["noise_model"]
        == "depolarizing:0.001,0.01,0.02"
    )
    assert result.backend["kernel"] == "aer"
    assert result.final_std is not None and result.final_std > 0
    assert result.total_energy > result.exact_energy
    clean = run_vqe(
        MOLS["H2"], VQEConfig(shots=2000, optimizer="COBYLA", max_iterations=12, seed=5), progress=False
    )
    assert "noise_model" not in clean.package_versions and clean.backend["noise_model"] is None
    assert clean.experiment_id != result.experiment_id


def test_fake_backend_noise_without_qiskit_ibm_runtime_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)  # as if the noise extra were not installed
    with pytest.raises(InputError, match=r"field 'noise' = 'fake:FakeManilaV2' needs qiskit-ibm-runtime"):
        build_noise_model(parse_noise("fake:FakeManilaV2"))


def test_fake_backend_noise_model_is_the_backends_and_a_run_records_it():
    """qiskit-ibm-runtime's FakeManilaV2 (5 qubits, a calibration snapshot): its gate and readout errors
    raise the sampled energy of the HF state, and a noisy VQE records the model (about 10 s idle)."""
    with pytest.raises(InputError, match=r"no fake backend 'FakeNowhere' in qiskit-ibm-runtime"):
        build_noise_model(parse_noise("fake:FakeNowhere"))
    model = build_noise_model(parse_noise("fake:FakeManilaV2"))
    assert {"cx", "sx", "x", "rz"} <= set(model.basis_gates) and model.noise_qubits == [0, 1, 2, 3, 4]
    assert "measure" in model.noise_instructions and "cx" in model.noise_instructions
    config = VQEConfig()
    problem = build_problem(MOLS["H2"], config)
    ansatz = build_ansatz(problem, config)
    theta = np.zeros(ansatz.num_parameters)
    noisy = AerEnergyEvaluator(ansatz, problem.qubit_op, shots=4000, seed=1, method="density_matrix",
                               noise_model=model, basis_gates=model.basis_gates)  # fmt: skip
    e_noisy, std = noisy.energy_sampled(theta)
    hf_electronic = MOLS["H2"].extra["e_hf"] - problem.energy_shift
    assert e_noisy - hf_electronic > 4 * std + 0.05  # Manila's gate and readout errors: ~0.2 Ha here

    cfg = VQEConfig(shots=1000, noise="fake:FakeManilaV2", optimizer="COBYLA", max_iterations=8, seed=5)
    result = run_vqe(MOLS["H2"], cfg, progress=False)
    assert result.backend["noise_model"] == "fake:FakeManilaV2" and result.backend["kernel"] == "aer"
    assert result.iterations and result.final_std > 0
    assert result.total_energy > result.exact_energy + 0.05


@pytest.mark.skipif("GPU" not in available_devices(), reason="no GPU visible to Qiskit Aer on this machine")
def test_gpu_run_uses_aer_on_the_gpu_and_matches_the_cpu_sector_kernel():
    gpu = run_vqe(MOLS["LiH"], VQEConfig(freeze_core=True, device="GPU"), progress=False)
    cpu = run_vqe(MOLS["LiH"], VQEConfig(freeze_core=True), progress=False)
    assert (gpu.device_used, gpu.package_versions["kernel"]) == ("GPU", "aer")
    assert (cpu.device_used, cpu.package_versions["kernel"]) == ("CPU", "sector")
    assert gpu.total_energy == pytest.approx(cpu.total_energy, abs=1e-8)
