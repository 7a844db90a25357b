"""Vectorised Jordan-Wigner mapping of a qiskit-nature FermionicOp (same result as JordanWignerMapper,
orders of magnitude faster on molecular Hamiltonians).

With Y = i X Z, a_j^dagger = (X_j + X_j Z_j)/2 Z_{<j} and a_j = (X_j - X_j Z_j)/2 Z_{<j}; products of
X^x Z^z factors stay in that form with a sign (-1)^{|z1 & x2|}, so every term is an integer-mask
computation; X^x Z^z equals (-i)^{#Y} times the Pauli label with Y where x and z overlap.
"""

from __future__ import annotations

import itertools

import numpy as np
from qiskit.quantum_info import PauliList, SparsePauliOp


def jordan_wigner(fermionic_op, num_modes: int | None = None) -> SparsePauliOp:
    n = int(num_modes if num_modes is not None else fermionic_op.num_spin_orbitals)
    if n > 62:
        raise ValueError(f"fast Jordan-Wigner supports up to 62 modes, got {n}")
    by_len: dict[int, tuple[list, list, list]] = {}
    for label, coeff in fermionic_op.items():
        parts = label.split() if label else []
        ops = [p.split("_") for p in parts]
        bucket = by_len.setdefault(len(ops), ([], [], []))
        bucket[0].append([int(i) for _a, i in ops])
        bucket[1].append([a == "+" for a, _i in ops])
        bucket[2].append(complex(coeff))
    xs, zs, cs = [], [], []
    for k, (idx_l, create_l, coeff_l) in by_len.items():
        coeffs = np.array(coeff_l, dtype=complex)
        if k == 0:
            xs.append(np.zeros(len(coeffs), dtype=np.int64))
            zs.append(np.zeros(len(coeffs), dtype=np.int64))
            cs.append(coeffs)
            continue
        idx = np.array(idx_l, dtype=np.int64)
        create = np.array(create_l, dtype=bool)
        e = np.left_shift(np.int64(1), idx)  # single-mode masks
        lt = e - 1  # Z string below each mode
        for choice in itertools.product((0, 1), repeat=k):
            x = np.zeros(len(coeffs), dtype=np.int64)
            z = np.zeros(len(coeffs), dtype=np.int64)
            sign = np.ones(len(coeffs))
            for j in range(k):
                xj = e[:, j]
                zj = lt[:, j] | (e[:, j] if choice[j] else 0)
                if choice[j]:
                    sign = np.where(create[:, j], sign, -sign)
                # (X^x Z^z)(X^xj Z^zj) = (-1)^{|z & xj|} X^{x^xj} Z^{z^zj}
                sign = sign * (1.0 - 2.0 * (np.bitwise_count(z & xj) & 1))
                x ^= xj
                z ^= zj
            xs.append(x)
            zs.append(z)
            cs.append(coeffs * sign * 0.5**k)
    x = np.concatenate(xs)
    z = np.concatenate(zs)
    c = np.concatenate(cs)
    ny = np.bitwise_count(x & z)
    c = c * (-1j) ** (ny % 4)
    bits = 1 << np.arange(n, dtype=np.int64)
    xb = (x[:, None] & bits[None, :]) != 0
    zb = (z[:, None] & bits[None, :]) != 0
    paulis = PauliList.from_symplectic(zb, xb)
    return SparsePauliOp(paulis, c).simplify(atol=1e-12)


def fast_jordan_wigner_mapper():
    """A qiskit-nature JordanWignerMapper whose single-operator mapping is :func:`jordan_wigner`."""
    from qiskit_nature.second_q.mappers import JordanWignerMapper
    from qiskit_nature.second_q.operators import FermionicOp

    class FastJordanWignerMapper(JordanWignerMapper):
        def _map_single(self, second_q_op, *, register_length=None):  # type: ignore[override]
            if isinstance(second_q_op, FermionicOp):
                n = register_length if register_length is not None else second_q_op.num_spin_orbitals
                return jordan_wigner(second_q_op, n)
            return super()._map_single(second_q_op, register_length=register_length)

    return FastJordanWignerMapper()
