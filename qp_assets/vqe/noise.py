"""Aer noise models for sampled (shots) runs.

Spec strings (``VQEConfig.noise``, ``qp vqe run --noise``):

- ``depolarizing:P1,P2[,READOUT]``: depolarizing error of probability P1 after every one-qubit gate and P2
  after every CX, and a symmetric readout error flipping each measured bit with probability READOUT
  (default 0); probabilities in [0, 1].
- ``fake:NAME``: the noise model of a ``qiskit_ibm_runtime.fake_provider`` backend (e.g. ``fake:FakeManilaV2``;
  needs qiskit-ibm-runtime, which is not a dependency of this project). Gate errors apply to the backend's
  basis gates, so circuits are transpiled to them; connectivity is not imposed.

The normalised spec is what results record.
"""

from __future__ import annotations

from dataclasses import dataclass

from qp_assets.vqe.errors import InputError

ONE_QUBIT_GATES = ["u", "rz", "ry", "rx", "h", "x", "sx", "sdg", "s"]


@dataclass(frozen=True)
class NoiseSpec:
    kind: str  # "depolarizing" | "fake"
    p1: float = 0.0
    p2: float = 0.0
    readout: float = 0.0
    backend: str = ""

    def __str__(self) -> str:
        if self.kind == "fake":
            return f"fake:{self.backend}"
        return f"depolarizing:{self.p1:g},{self.p2:g},{self.readout:g}"


def parse_noise(spec: str) -> NoiseSpec:
    """Parse a spec string (see module doc); InputError naming the field 'noise' otherwise."""
    kind, _, rest = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    if kind == "fake" and rest.strip():
        return NoiseSpec("fake", backend=rest.strip())
    if kind in ("depolarizing", "depolarising"):
        try:
            values = [float(v) for v in rest.split(",")]
        except ValueError:
            values = []
        if len(values) in (2, 3) and all(0.0 <= v <= 1.0 for v in values):
            return NoiseSpec("depolarizing", *values)
    raise InputError(
        f"config: field 'noise' = {spec!r} is not a noise spec; use depolarizing:P1,P2[,READOUT] "
        "(probabilities in [0, 1]) or fake:BACKEND (qiskit-ibm-runtime fake backend)"
    )


def build_noise_model(spec: NoiseSpec):
    """The qiskit-aer NoiseModel of ``spec``."""
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    if spec.kind == "fake":
        try:
            from qiskit_ibm_runtime import fake_provider
        except ImportError:
            raise InputError(
                f"config: field 'noise' = '{spec}' needs qiskit-ibm-runtime (pip install qiskit-ibm-runtime), "
                "which is not installed"
            ) from None
        backend_cls = getattr(fake_provider, spec.backend, None)
        if backend_cls is None:
            raise InputError(
                f"config: field 'noise' = '{spec}': no fake backend {spec.backend!r} in qiskit-ibm-runtime"
            )
        return NoiseModel.from_backend(backend_cls())
    model = NoiseModel()
    if spec.p1 > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(spec.p1, 1), ONE_QUBIT_GATES)
    if spec.p2 > 0:
        model.add_all_qubit_quantum_error(depolarizing_error(spec.p2, 2), ["cx"])
    if spec.readout > 0:
        r = spec.readout
        model.add_all_qubit_readout_error(ReadoutError([[1 - r, r], [r, 1 - r]]))
    return model
