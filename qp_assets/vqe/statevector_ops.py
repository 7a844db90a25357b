"""Compiled form of a parametrised circuit for fast statevector algebra (numpy).

A circuit is flattened into a sequence of

- :class:`Rotation` ``exp(-i (scale*theta[k] + offset) G)`` where ``G`` is a Hermitian sum of Pauli terms
  sharing one X-mask (so ``G psi[c] = d[c] psi[c ^ x]`` and ``G^2 = |d|^2``, which makes the exponential a
  closed-form cos/sin update), and
- :class:`FixedGate` (a parameter-free unitary on <= 3 qubits).

Basis states are little-endian bit strings (qubit 0 is bit 0), as in Qiskit. Used for the adjoint
(reverse-mode) gradient on the statevector that Aer returns, and as a pure-numpy reference path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression
from qiskit.circuit.library import PauliEvolutionGate
from qiskit.quantum_info import Operator, SparsePauliOp

# Rotation gates exp(-i theta/2 P) by name -> Pauli label (qiskit order: last char = first qubit);
# p and u1 equal rz up to a global phase, which no expectation value sees.
_ROTATIONS = {
    "p": "Z",
    "u1": "Z",
    "rx": "X",
    "ry": "Y",
    "rz": "Z",
    "rxx": "XX",
    "ryy": "YY",
    "rzz": "ZZ",
    "rzx": "ZX",
}


@dataclass
class Rotation:
    """exp(-i (scale * theta[param] + offset) G) with G psi[c] = d[c] * psi[c ^ xmask]."""

    param: int  # -1 for a constant angle
    scale: float
    offset: float
    xmask: int
    d_unit: np.ndarray  # d / |d| (0 where |d| = 0), complex
    d_abs: np.ndarray  # |d|, float


@dataclass
class FixedGate:
    matrix: np.ndarray  # little-endian over `qubits`
    qubits: tuple[int, ...]


Op = Rotation | FixedGate


class CompiledCircuit:
    """Flattened circuit over ``num_qubits`` with parameters in the order of ``parameters``."""

    def __init__(self, circuit: QuantumCircuit, parameters: list[Parameter] | None = None):
        self.num_qubits = circuit.num_qubits
        self.parameters = list(parameters if parameters is not None else circuit.parameters)
        self._pindex = {p: i for i, p in enumerate(self.parameters)}
        self.dim = 1 << self.num_qubits
        self._base = np.arange(self.dim, dtype=np.int64)
        self._perm_cache: dict[int, np.ndarray] = {}
        self.ops: list[Op] = []
        self._flatten(circuit, list(range(circuit.num_qubits)))

    # ------------------------------------------------------------------ compile
    def perm(self, xmask: int) -> np.ndarray:
        p = self._perm_cache.get(xmask)
        if p is None:
            p = self._base ^ xmask
            self._perm_cache[xmask] = p
        return p

    def _angle(self, expr, factor: float) -> tuple[int, float, float]:
        if isinstance(expr, ParameterExpression) and expr.parameters:
            if len(expr.parameters) != 1:
                raise ValueError(f"gate angle {expr} depends on more than one parameter")
            (p,) = expr.parameters
            scale = float(expr.gradient(p))
            offset = float(expr.bind({p: 0.0}))
            return self._pindex[p], scale * factor, offset * factor
        return -1, 0.0, float(expr) * factor

    def _add_pauli_group(
        self, terms: list[tuple[int, int, complex]], param: int, scale: float, offset: float
    ):
        """terms: (xmask, zmask, coeff * i^ny) with a common xmask."""
        xmask = terms[0][0]
        base = self._base
        d = np.zeros(self.dim, dtype=complex)
        for _x, z, c in terms:
            # P|b> = phase (-1)^{|b & z|} |b ^ x>  =>  (P psi)[c] = phase (-1)^{|(c^x) & z|} psi[c ^ x]
            sign = 1.0 - 2.0 * (np.bitwise_count((base ^ xmask) & z) & 1)
            d += c * sign
        d_abs = np.abs(d)
        with np.errstate(invalid="ignore", divide="ignore"):
            d_unit = np.where(d_abs > 1e-14, d / np.where(d_abs > 1e-14, d_abs, 1.0), 0.0)
        self.ops.append(Rotation(param, scale, offset, xmask, d_unit.astype(complex), d_abs))

    def _add_pauli_op(self, op: SparsePauliOp, qubits: list[int], param: int, scale: float, offset: float):
        terms = []
        for label, coeff in zip(op.paulis.to_labels(), op.coeffs, strict=True):
            x = z = 0
            ny = 0
            for j, ch in enumerate(reversed(label)):
                q = qubits[j]
                if ch in "XY":
                    x |= 1 << q
                if ch in "ZY":
                    z |= 1 << q
                if ch == "Y":
                    ny += 1
            if abs(coeff.imag) > 1e-12:
                raise ValueError(f"Pauli evolution with non-Hermitian coefficient {coeff} on {label}")
            terms.append((x, z, float(coeff.real) * (1j**ny)))
        commuting = all(
            ((bin(a[0] & b[1]).count("1") + bin(a[1] & b[0]).count("1")) % 2) == 0
            for i, a in enumerate(terms)
            for b in terms[i + 1 :]
        )
        if commuting:
            groups: dict[int, list] = {}
            for t in terms:
                groups.setdefault(t[0], []).append(t)
            for g in groups.values():
                self._add_pauli_group(g, param, scale, offset)
        else:  # Lie-Trotter order, one term at a time (what Qiskit synthesises)
            for t in terms:
                self._add_pauli_group([t], param, scale, offset)

    def _flatten(self, circuit: QuantumCircuit, qmap: list[int]) -> None:
        for inst in circuit.data:
            op = inst.operation
            qubits = [qmap[circuit.find_bit(q).index] for q in inst.qubits]
            name = op.name
            if name in ("barrier", "save_statevector", "save_expval", "measure", "delay"):
                continue
            if isinstance(op, PauliEvolutionGate):
                param, scale, offset = self._angle(op.params[0], 1.0)
                operator = op.operator
                ops = operator if isinstance(operator, list) else [operator]
                for o in ops:
                    self._add_pauli_op(SparsePauliOp(o), qubits, param, scale, offset)
            elif name in _ROTATIONS:
                param, scale, offset = self._angle(op.params[0], 0.5)
                self._add_pauli_op(SparsePauliOp(_ROTATIONS[name]), qubits, param, scale, offset)
            elif not op.params and op.num_qubits <= 3 and name not in ("initialize", "reset"):
                try:
                    mat = Operator(op).data
                except Exception:  # noqa: BLE001 - fall back to the definition
                    mat = None
                if mat is not None:
                    self.ops.append(FixedGate(np.asarray(mat, dtype=complex), tuple(qubits)))
                    continue
                self._recurse(op, qubits, name)
            else:
                self._recurse(op, qubits, name)

    def _recurse(self, op, qubits: list[int], name: str) -> None:
        if op.definition is None:
            raise ValueError(f"cannot compile gate {name!r} for the statevector engine")
        self._flatten(op.definition, qubits)

    # ------------------------------------------------------------------ apply
    def _angle_value(self, r: Rotation, theta: np.ndarray) -> float:
        return (r.scale * theta[r.param] if r.param >= 0 else 0.0) + r.offset

    def _apply_rotation(self, r: Rotation, psi: np.ndarray, alpha: float) -> np.ndarray:
        """exp(-i alpha G) psi."""
        c = np.cos(alpha * r.d_abs)
        s = np.sin(alpha * r.d_abs)
        moved = psi if r.xmask == 0 else psi[self.perm(r.xmask)]
        return c * psi - 1j * s * r.d_unit * moved

    def _apply_fixed(self, g: FixedGate, psi: np.ndarray, adjoint: bool = False) -> np.ndarray:
        n = self.num_qubits
        k = len(g.qubits)
        m = g.matrix.conj().T if adjoint else g.matrix
        u = m.reshape((2,) * (2 * k))  # axes: out_{k-1..0}, in_{k-1..0}
        t = psi.reshape((2,) * n)
        axes = [n - 1 - q for q in reversed(g.qubits)]  # in_{k-1}..in_0
        out = np.tensordot(u, t, axes=(list(range(k, 2 * k)), axes))
        out = np.moveaxis(out, list(range(k)), axes)
        return np.ascontiguousarray(out).reshape(-1)

    def statevector(self, theta: np.ndarray, psi0: np.ndarray | None = None) -> np.ndarray:
        """Pure-numpy forward simulation from |0...0> (or psi0)."""
        psi = np.zeros(self.dim, dtype=complex) if psi0 is None else psi0.astype(complex, copy=True)
        if psi0 is None:
            psi[0] = 1.0
        for op in self.ops:
            if isinstance(op, Rotation):
                psi = self._apply_rotation(op, psi, self._angle_value(op, theta))
            else:
                psi = self._apply_fixed(op, psi)
        return psi

    def adjoint_gradient(self, theta: np.ndarray, psi: np.ndarray, h_psi: np.ndarray) -> np.ndarray:
        """dE/dtheta for E = <psi|H|psi>, given the final state psi and H psi.

        Reverse-mode sweep: phi = psi and lam = H psi are un-rotated gate by gate together (one gather per
        gate for both); dE/dalpha_m = 2 Im <lam_m| G_m |phi_m> for each rotation angle alpha_m.
        """
        grad = np.zeros(len(self.parameters))
        pair = np.stack([psi, h_psi])  # row 0: phi, row 1: lambda
        for op in reversed(self.ops):
            if isinstance(op, Rotation):
                alpha = self._angle_value(op, theta)
                moved = pair if op.xmask == 0 else pair[:, self.perm(op.xmask)]
                du = op.d_unit
                if op.param >= 0 and op.scale != 0.0:
                    g_phi = (du * op.d_abs) * moved[0]
                    grad[op.param] += 2.0 * op.scale * np.vdot(pair[1], g_phi).imag
                # exp(+i alpha G) = cos(alpha |d|) + i sin(alpha |d|) G/|d|
                c = np.cos(alpha * op.d_abs)
                s = np.sin(alpha * op.d_abs)
                pair = c * pair + (1j * s * du) * moved
            else:
                pair = np.stack(
                    [
                        self._apply_fixed(op, pair[0], adjoint=True),
                        self._apply_fixed(op, pair[1], adjoint=True),
                    ]
                )
        return grad
