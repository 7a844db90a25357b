"""A small vqe_result_v3 record for monitoring tests (valid against the .avsc; values in hartree/seconds)."""

from __future__ import annotations

import time
import uuid
from typing import Any


def vqe_record(
    *,
    run_id: str | None = None,
    molecule: str = "H2",
    energies: tuple[float, ...] = (-1.1169, -1.1370, -1.13727),
    exact: float | None = -1.137270174660903,
    snapshots: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Record shaped like VQEResult.to_record(); iteration timestamps 20 ms apart."""
    now_ms = int(time.time() * 1000)
    stamps = [now_ms - 20 * (len(energies) - 1 - i) for i in range(len(energies))]
    total = energies[-1]
    return {
        "run_id": run_id or str(uuid.uuid4()),
        "request_id": None,
        "experiment_id": "test-experiment",
        "event_time": now_ms,
        "started_at": now_ms - 1500,
        "molecule": {"name": molecule, "symbols": ["H", "H"], "coords": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.735]],
                     "charge": 0, "multiplicity": 1, "units": "angstrom", "masses": None, "num_electrons": 2},
        "basis": "sto3g",
        "mapper": "jordan_wigner",
        "active_space": {"freeze_core": False, "active_electrons": None, "active_orbitals": None,
                         "num_spatial_orbitals": 2, "num_alpha": 1, "num_beta": 1, "num_qubits": 4},
        "ansatz": {"name": "uccsd", "reps": 1, "num_parameters": 3, "num_qubits": 4, "depth": 10,
                   "initial_state": "hartree_fock", "circuit_qasm3": "OPENQASM 3.0;"},
        "optimizer": {"name": "L-BFGS-B", "options_json": "{}", "max_iterations": 100, "max_evaluations": None},
        "backend": {"method": "statevector", "shots": None, "device_requested": "CPU", "device_used": "CPU",
                    "seed": 1},
        "initial_parameters": [0.0, 0.0, 0.0],
        "optimal_parameters": [0.0, 0.0, -0.11],
        "hamiltonian_terms": [{"pauli": "IIII", "coeff_real": -0.81, "coeff_imag": 0.0}],
        "iterations": [
            {"iteration": i + 1, "energy": e, "std": None, "gradient_norm": None, "parameter_delta_norm": None,
             "cumulative_min_energy": min(energies[: i + 1]), "nfev": 2 * (i + 1), "parameters": [0.0, 0.0, -0.1],
             "timestamp": stamps[i]}
            for i, e in enumerate(energies)
        ],
        "reference_energies": {"hf": -1.116684387, "exact": exact, "exact_method": "sparse_eigsh_sector",
                               "nuclear_repulsion": 0.7199689},
        "electronic_energy": total - 0.7199689,
        "total_energy": total,
        "error_vs_exact_mha": None if exact is None else (total - exact) * 1000.0,
        "optimizer_result": {"success": True, "nfev": 2 * len(energies), "nit": len(energies), "message": "ok"},
        "timings": {"hamiltonian_s": 0.9, "mapping_s": 0.01, "vqe_s": 0.16, "total_s": 1.5},
        "package_versions": {"qiskit": "2.6.1"},
        "performance_snapshots": snapshots if snapshots is not None else [
            {"timestamp": now_ms - 1000, "cpu_percent": 40.0, "memory_percent": 30.0,
             "process_rss_bytes": 200_000_000, "gpu_utilization_percent": None, "gpu_memory_used_bytes": None},
            {"timestamp": now_ms, "cpu_percent": 60.0, "memory_percent": 35.0,
             "process_rss_bytes": 250_000_000, "gpu_utilization_percent": None, "gpu_memory_used_bytes": None},
        ],
    }  # fmt: skip
