"""VQE result: one run, shaped exactly like ``qp_assets/streaming/schemas/vqe_result_v4.avsc``.

Energies in hartree (total unless named otherwise), coordinates in angstrom, durations in seconds,
timestamps in milliseconds since the epoch (UTC). Nested records are plain dicts with the schema's field
names; iterations are 1-based.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(str(resources.files("qp_assets") / "streaming" / "schemas" / "vqe_result_v4.avsc"))

_TIMESTAMP_FIELDS = ("event_time", "started_at")


def now_ms() -> int:
    """Milliseconds since the epoch (UTC)."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _to_ms(value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(round(value.timestamp() * 1000))
    return int(value)


@dataclass
class VQEResult:
    """One VQE run (see the .avsc docs for each field)."""

    run_id: str
    experiment_id: str
    event_time: int
    started_at: int
    molecule: dict[str, Any]
    basis: str
    mapper: str
    active_space: dict[str, Any]
    ansatz: dict[str, Any]
    optimizer: dict[str, Any]
    backend: dict[str, Any]
    initial_parameters: list[float]
    optimal_parameters: list[float]
    hamiltonian_terms: list[dict[str, Any]]
    iterations: list[dict[str, Any]]
    reference_energies: dict[str, Any]
    electronic_energy: float
    total_energy: float
    error_vs_exact_mha: float | None
    optimizer_result: dict[str, Any]
    timings: dict[str, float]
    package_versions: dict[str, str]
    performance_snapshots: list[dict[str, Any]] = field(default_factory=list)
    request_id: str | None = None
    adapt: dict[str, Any] | None = None  # ADAPT-VQE: gradient_threshold (Ha/rad), max_operators, operators
    scan_id: str | None = None  # the PES scan this run is a point of
    scan_point: dict[str, Any] | None = None  # index, num_points, atoms [I, J], distance (angstrom)
    experiment_key: str | None = None  # result-reuse key (qp_assets.vqe.reuse)
    reused_from: str | None = None  # request_id whose result this run reuses; None when computed

    # ------------------------------------------------------------------ convenience
    @property
    def molecule_name(self) -> str:
        return self.molecule["name"]

    @property
    def num_qubits(self) -> int:
        return int(self.active_space["num_qubits"])

    @property
    def hf_energy(self) -> float:
        return float(self.reference_energies["hf"])

    @property
    def exact_energy(self) -> float | None:
        return self.reference_energies.get("exact")

    @property
    def device_used(self) -> str:
        return self.backend["device_used"]

    @property
    def kernel(self) -> str:
        """``sector`` | ``aer``; records written before v4 carry it only in ``package_versions``."""
        return self.backend.get("kernel") or self.package_versions.get("kernel", "aer")

    @property
    def noise_model(self) -> str | None:
        return self.backend.get("noise_model") or self.package_versions.get("noise_model")

    @property
    def energies(self) -> list[float]:
        """Total energy per optimizer iteration (hartree)."""
        return [it["energy"] for it in self.iterations]

    @property
    def final_std(self) -> float | None:
        return self.iterations[-1].get("std") if self.iterations else None

    # ------------------------------------------------------------------ serialisation
    def to_record(self) -> dict[str, Any]:
        """Plain dict that validates against vqe_result_v4.avsc (timestamps as int ms)."""
        rec = dataclasses.asdict(self)
        for k in _TIMESTAMP_FIELDS:
            rec[k] = _to_ms(rec[k])
        for it in rec["iterations"]:
            it["timestamp"] = _to_ms(it["timestamp"])
        for snap in rec["performance_snapshots"]:
            snap["timestamp"] = _to_ms(snap["timestamp"])
        return rec

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> VQEResult:
        """Inverse of :meth:`to_record`; also accepts records read back by fastavro (datetimes)."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in record.items() if k in names}
        data = json.loads(json.dumps(data, default=lambda o: _to_ms(o)))
        for k in _TIMESTAMP_FIELDS:
            data[k] = _to_ms(record[k])
        for it, src in zip(data["iterations"], record["iterations"], strict=True):
            it["timestamp"] = _to_ms(src["timestamp"])
        for snap, src in zip(data.get("performance_snapshots", []), record.get("performance_snapshots", []),
                             strict=True):  # fmt: skip
            snap["timestamp"] = _to_ms(src["timestamp"])
        return cls(**data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_record(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> VQEResult:
        return cls.from_record(json.loads(text))

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        exact = self.exact_energy
        its = self.optimizer_result["nit"]
        per_it = self.timings["vqe_s"] / max(its, 1)
        lines = [
            f"molecule        {self.molecule_name} ({self.basis}, {self.mapper}, {self.num_qubits} qubits)",
            f"ansatz          {self.ansatz['name']} reps={self.ansatz['reps']} "
            f"params={self.ansatz['num_parameters']} init={self.ansatz['initial_state']}",
            f"optimizer       {self.optimizer['name']}: {self.optimizer_result['message']}",
            f"energy          {self.total_energy:.8f} Ha"
            + (f" +/- {self.final_std:.2e}" if self.final_std is not None else ""),
            f"hartree-fock    {self.hf_energy:.8f} Ha",
            f"exact           {exact:.8f} Ha ({self.reference_energies['exact_method']})"
            if exact is not None
            else "exact           n/a (space too large)",
        ]
        if self.error_vs_exact_mha is not None:
            ok = "within" if abs(self.error_vs_exact_mha) <= 1.6 else "OUTSIDE"
            lines.append(f"error           {self.error_vs_exact_mha:.4f} mHa ({ok} chemical accuracy)")
        lines += [
            f"iterations      {its} (energy evaluations {self.optimizer_result['nfev']})",
            f"time            {self.timings['total_s']:.3f} s total, {self.timings['vqe_s']:.3f} s VQE, "
            f"{per_it * 1000:.2f} ms/iteration",
            f"device          {self.device_used} ({self.backend['method']}"
            + (f", {self.backend['shots']} shots" if self.backend["shots"] else ", exact")
            + (f", noise {self.noise_model}" if self.noise_model else "")
            + f"; kernel {self.kernel})",
        ]
        return "\n".join(lines)


def load_schema() -> Any:
    """Parsed vqe_result_v4.avsc (fastavro)."""
    import fastavro

    return fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))


def as_record(result: Any) -> dict[str, Any]:
    """The record dict (schema ``vqe_result``) of a :class:`VQEResult` or of a record dict (copied)."""
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "to_record"):
        return result.to_record()
    raise TypeError(f"result must be a VQEResult or its record dict, got {type(result).__name__}")
