"""Energy (and gradient) evaluation on Qiskit Aer.

Exact mode: the ansatz is transpiled ONCE for Aer; each evaluation replays it with the bound angles on an
Aer ``AerState`` (see :mod:`qp_assets.vqe.aer_state_runner`; ``aer_path="run"`` uses ``AerSimulator.run``
with ``parameter_binds`` and ``save_statevector`` instead), takes the statevector from Aer and computes <psi|H|psi> against a precomputed scipy
sparse Hamiltonian; the gradient comes from one adjoint (reverse-mode) sweep over the circuit's gates on
that statevector (:mod:`qp_assets.vqe.statevector_ops`), i.e. ~3 statevector passes for all parameters.

Shots mode: the Hamiltonian is split into qubit-wise commuting groups; one Aer job samples every group's
measurement circuit; the estimate comes with its standard deviation (hartree).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import psutil
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import SparsePauliOp

from qp_assets.vqe.aer_state_runner import AerStateRunner
from qp_assets.vqe.errors import InputError
from qp_assets.vqe.hamiltonian import MAX_STATEVECTOR_QUBITS
from qp_assets.vqe.statevector_ops import CompiledCircuit

log = logging.getLogger(__name__)

MEMORY_FRACTION = 0.8
# Gates every Aer method supports natively; transpiling against this list (once per run) avoids building
# the full Aer target, which alone costs ~1 s.
AER_BASIS = ["cx", "u", "rz", "ry", "rx", "h", "x", "sx", "sdg", "s"]


def available_devices() -> tuple[str, ...]:
    from qiskit_aer import AerSimulator

    try:
        return tuple(AerSimulator().available_devices())
    except Exception:  # noqa: BLE001
        return ("CPU",)


def resolve_device(requested: str) -> str:
    """CPU | GPU | auto -> the device that will run. GPU without one is an InputError; auto falls back."""
    devices = available_devices()
    if requested == "CPU":
        return "CPU"
    if requested == "GPU":
        if "GPU" not in devices:
            raise InputError(
                f"config: field 'device' = 'GPU' but Aer has no GPU here (available: {', '.join(devices)}); "
                "install qiskit-aer-gpu on a CUDA host or use --device auto"
            )
        return "GPU"
    if "GPU" in devices:
        return "GPU"
    log.warning(
        "device auto: no GPU available to Aer (available: %s); falling back to CPU", ", ".join(devices)
    )
    return "CPU"


def estimate_memory_bytes(
    num_qubits: int, hamiltonian: SparsePauliOp, num_rotations: int, shots: bool
) -> int:
    """Rough peak bytes: statevectors (Aer + adjoint work vectors), sparse Hamiltonian, gate tables."""
    dim = 1 << num_qubits
    vectors = 8 * 16 * dim
    if shots:
        return vectors
    x_groups = len({tuple(r) for r in hamiltonian.paulis.x.astype(np.uint8)})
    sparse_h = dim * x_groups * (16 + 4)
    gate_tables = num_rotations * dim * (16 + 8 + 8)
    return vectors + sparse_h + gate_tables


def check_memory(molecule_name: str, num_qubits: int, needed: int) -> None:
    """Refuse (InputError) before allocating when the estimate exceeds the limits."""
    if num_qubits > MAX_STATEVECTOR_QUBITS:
        raise InputError(
            f"molecule {molecule_name}: field 'num_qubits' = {num_qubits} exceeds the simulator limit of "
            f"{MAX_STATEVECTOR_QUBITS} qubits (use an active space)"
        )
    available = psutil.virtual_memory().available
    if needed > MEMORY_FRACTION * available:
        raise InputError(
            f"molecule {molecule_name}: field 'num_qubits' = {num_qubits} needs about {needed / 2**30:.2f} GiB, "
            f"more than {MEMORY_FRACTION:.0%} of the {available / 2**30:.2f} GiB available (use an active space)"
        )


class AerEnergyEvaluator:
    """Evaluates E(theta) = <psi(theta)|H|psi(theta)> (electronic part, hartree) on Aer."""

    def __init__(
        self,
        ansatz: QuantumCircuit,
        hamiltonian: SparsePauliOp,
        *,
        method: str = "statevector",
        device: str = "CPU",
        shots: int | None = None,
        seed: int | None = None,
        compiled: CompiledCircuit | None = None,
        use_aer: bool = True,
        aer_path: str = "state",
        noise_model=None,
        basis_gates: list[str] | None = None,
    ):
        """``noise_model`` (qiskit-aer NoiseModel, shots only) and the ``basis_gates`` the sampled circuits are
        transpiled to (default AER_BASIS; a fake backend's noise model needs its own basis)."""
        from qiskit_aer import AerSimulator

        self.parameters = list(ansatz.parameters)
        self.hamiltonian = hamiltonian
        self.shots = shots
        self.use_aer = use_aer
        self.aer_path = aer_path  # "state": AerState replay (default); "run": AerSimulator.run per evaluation
        self._rng = np.random.default_rng(seed)
        self.num_evaluations = 0
        if noise_model is not None and shots is None:
            raise ValueError("a noise model needs shots")
        self.simulator = AerSimulator(
            method=method, device=device, seed_simulator=seed, noise_model=noise_model
        )
        self._basis = basis_gates or AER_BASIS
        if shots is None:
            self.compiled = compiled or CompiledCircuit(ansatz, self.parameters)
            self.h_sparse = hamiltonian.to_matrix(sparse=True).tocsr()
            circ = transpile(ansatz, basis_gates=AER_BASIS, optimization_level=1)
            self.transpiled_ansatz = circ.copy()  # without the save instruction (for QASM export)
            try:
                self._runner = AerStateRunner(circ, self.parameters, method=method, device=device, seed=seed)
            except ValueError as exc:  # a gate AerState cannot replay: use AerSimulator.run
                log.debug("AerState replay unavailable (%s); using AerSimulator.run", exc)
                self.aer_path = "run"
            circ.save_statevector()
            self._circuits = [circ]
        else:
            self._build_shot_circuits(ansatz)

    # ------------------------------------------------------------------ exact
    def _binds(self, theta: np.ndarray, copies: int = 1) -> list[dict]:
        bind = {p: [float(v)] for p, v in zip(self.parameters, theta, strict=True)}
        return [bind] * copies

    def statevector(self, theta: np.ndarray) -> np.ndarray:
        if not self.use_aer:
            return self.compiled.statevector(theta)
        if self.aer_path == "state":
            return self._runner.statevector(theta)
        kwargs = {"parameter_binds": self._binds(theta)} if self.parameters else {}
        result = self.simulator.run(self._circuits[0], **kwargs).result()
        return np.asarray(result.get_statevector(0), dtype=complex)

    def energy_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Exact electronic energy and its analytic gradient (adjoint differentiation)."""
        self.num_evaluations += 1
        psi = self.statevector(theta)
        h_psi = self.h_sparse @ psi
        energy = float(np.vdot(psi, h_psi).real)
        grad = self.compiled.adjoint_gradient(theta, psi, h_psi)
        return energy, grad

    def energy_exact(self, theta: np.ndarray) -> float:
        self.num_evaluations += 1
        psi = self.statevector(theta)
        return float(np.vdot(psi, self.h_sparse @ psi).real)

    # ------------------------------------------------------------------ shots
    def _build_shot_circuits(self, ansatz: QuantumCircuit) -> None:
        self._groups: list[SparsePauliOp] = self.hamiltonian.group_commuting(qubit_wise=True)
        circuits = []
        n = ansatz.num_qubits
        for group in self._groups:
            circ = ansatz.copy()
            basis = ["I"] * n
            for pauli in group.paulis:
                for q in range(n):
                    if pauli.x[q] or pauli.z[q]:
                        basis[q] = "Y" if (pauli.x[q] and pauli.z[q]) else ("X" if pauli.x[q] else "Z")
            for q, b in enumerate(basis):
                if b == "X":
                    circ.h(q)
                elif b == "Y":
                    circ.sdg(q)
                    circ.h(q)
            circ.measure_all()
            circuits.append(circ)
        self._circuits = transpile(circuits, basis_gates=self._basis, optimization_level=1)
        weights = 1 << np.arange(n, dtype=np.int64)
        self._group_terms = [
            ((g.paulis.x | g.paulis.z).astype(np.int64) @ weights, g.coeffs.real.copy()) for g in self._groups
        ]

    def energy_sampled(self, theta: np.ndarray) -> tuple[float, float]:
        """Shot estimate of the electronic energy and its standard deviation (hartree)."""
        self.num_evaluations += 1
        seed = int(self._rng.integers(0, 2**31 - 1))
        kwargs = {"parameter_binds": self._binds(theta, len(self._circuits))} if self.parameters else {}
        result = self.simulator.run(self._circuits, shots=self.shots, seed_simulator=seed, **kwargs).result()
        total, variance = 0.0, 0.0
        for i, (masks, coeffs) in enumerate(self._group_terms):
            counts = result.get_counts(i)
            keys = np.array([int(k.replace(" ", ""), 2) for k in counts], dtype=np.int64)
            freq = np.array(list(counts.values()), dtype=float)
            shots = freq.sum()
            signs = 1.0 - 2.0 * (np.bitwise_count(keys[:, None] & masks[None, :]) & 1)
            values = signs @ coeffs  # group observable per outcome
            mean = float(freq @ values / shots)
            second = float(freq @ values**2 / shots)
            total += mean
            variance += max(second - mean**2, 0.0) / shots
        return total, math.sqrt(variance)
