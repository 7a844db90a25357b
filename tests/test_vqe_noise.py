"""Aer noise models for sampled runs, and the GPU path of UCC runs."""

from __future__ import annotations

import importlib.util

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


@pytest.mark.skipif(
    importlib.util.find_spec("qiskit_ibm_runtime") is not None, reason="qiskit-ibm-runtime installed"
)
def test_fake_backend_noise_without_qiskit_ibm_runtime_is_a_clear_error():
    with pytest.raises(InputError, match=r"field 'noise' = 'fake:FakeManilaV2' needs qiskit-ibm-runtime"):
        build_noise_model(parse_noise("fake:FakeManilaV2"))


@pytest.mark.skipif("GPU" not in available_devices(), reason="no GPU visible to Qiskit Aer on this machine")
def test_gpu_run_uses_aer_on_the_gpu_and_matches_the_cpu_sector_kernel():
    gpu = run_vqe(MOLS["LiH"], VQEConfig(freeze_core=True, device="GPU"), progress=False)
    cpu = run_vqe(MOLS["LiH"], VQEConfig(freeze_core=True), progress=False)
    assert (gpu.device_used, gpu.package_versions["kernel"]) == ("GPU", "aer")
    assert (cpu.device_used, cpu.package_versions["kernel"]) == ("CPU", "sector")
    assert gpu.total_energy == pytest.approx(cpu.total_energy, abs=1e-8)
