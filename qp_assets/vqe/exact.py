"""Exact (FCI) reference: lowest eigenvalue of the Jordan-Wigner qubit Hamiltonian restricted to the
(N_alpha, N_beta) sector, built directly on the sector basis (never the full 2^n matrix).

Tractable limit: sector dimension C(n, N_alpha) * C(n, N_beta) <= MAX_SECTOR_DIM (1,000,000, e.g. up to
about 12 electrons in 12 spatial orbitals = 24 qubits); above it the exact energy is ``None``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.sparse as sp
from qiskit.quantum_info import SparsePauliOp
from scipy.sparse.linalg import eigsh

MAX_SECTOR_DIM = 1_000_000
#: Above this sector dimension the runner takes the exact energy from PySCF's FCI solver on the integrals
#: (building the sparse matrix from tens of thousands of Pauli terms would take minutes).
MAX_SPARSE_EXACT_DIM = 50_000
EXACT_METHOD = "sparse_eigsh_sector"


def sector_dimension(num_spatial_orbitals: int, num_particles: tuple[int, int]) -> int:
    n = num_spatial_orbitals
    return math.comb(n, num_particles[0]) * math.comb(n, num_particles[1])


def sector_states(num_spatial_orbitals: int, num_particles: tuple[int, int]) -> np.ndarray:
    """Sorted basis states (ints) of the JW sector: alpha spin orbitals = qubits 0..n-1, beta = n..2n-1."""
    n = num_spatial_orbitals
    alphas = [sum(1 << i for i in c) for c in itertools.combinations(range(n), num_particles[0])]
    betas = [sum(1 << (n + i) for i in c) for c in itertools.combinations(range(n), num_particles[1])]
    states = (np.array(alphas, dtype=np.int64)[:, None] | np.array(betas, dtype=np.int64)[None, :]).ravel()
    return np.sort(states)


def pauli_masks(op: SparsePauliOp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xmask, zmask, coeff * i^{#Y}) per term, so that P|b> = phase (-1)^{|b & z|} |b ^ x>."""
    weights = 1 << np.arange(op.num_qubits, dtype=np.int64)
    x = op.paulis.x.astype(np.int64) @ weights
    z = op.paulis.z.astype(np.int64) @ weights
    ny = (op.paulis.x & op.paulis.z).sum(axis=1)
    # ``phase`` is the group phase of the label ((-i)^phase); each Y = i X Z contributes i.
    label_phase = (-1j) ** op.paulis.phase
    coeffs = op.coeffs * label_phase * (1j**ny)
    return x, z, coeffs


def sector_hamiltonian(op: SparsePauliOp, states: np.ndarray) -> sp.csr_matrix:
    """Matrix of ``op`` on the span of ``states`` (terms leaving the sector are dropped)."""
    xs, zs, cs = pauli_masks(op)
    dim = len(states)
    rows, cols, vals = [], [], []
    for x in np.unique(xs):
        sel = xs == x
        d = np.zeros(dim, dtype=complex)
        for z, c in zip(zs[sel], cs[sel], strict=True):
            # H[c', c] with c' = c ^ x: amplitude from column c to row c ^ x
            d += c * (1.0 - 2.0 * (np.bitwise_count(states & z) & 1))
        target = states ^ x
        pos = np.searchsorted(states, target)
        pos_clipped = np.minimum(pos, dim - 1)
        ok = (states[pos_clipped] == target) & (np.abs(d) > 1e-14)
        rows.append(pos_clipped[ok])
        cols.append(np.nonzero(ok)[0])
        vals.append(d[ok])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(dim, dim)
    )


def exact_sector_energy(
    jw_op: SparsePauliOp, num_spatial_orbitals: int, num_particles: tuple[int, int]
) -> float | None:
    """Lowest eigenvalue (hartree, electronic part) of ``jw_op`` in the (N_alpha, N_beta) sector, or None
    when the sector is larger than MAX_SECTOR_DIM."""
    dim = sector_dimension(num_spatial_orbitals, num_particles)
    if dim > MAX_SECTOR_DIM:
        return None
    states = sector_states(num_spatial_orbitals, num_particles)
    h = sector_hamiltonian(jw_op, states)
    if dim <= 400:
        return float(np.linalg.eigvalsh(h.toarray()).min())
    v0 = np.ones(dim) / math.sqrt(dim)
    val = eigsh(h, k=1, which="SA", v0=v0.astype(h.dtype), tol=1e-12, maxiter=10000)[0]
    return float(val.real.min())
