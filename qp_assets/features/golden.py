"""Deterministic synthetic VQE results in the v3 contract, written as landed Avro files.

Used by the feature tests (golden input) and by ``benchmarks/features.py``. Files are Avro object
container files written with fastavro in exactly the landing layout of the Kafka Connect sink::

    <root>/raw/topics/<topic>/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition>+<offset:019d>.avro

where ``<root>`` is a local folder or an S3 bucket (``boto3`` client + bucket + key prefix).
Values are deterministic functions of the run index so tests can assert exact numbers.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro

from qp_assets.landing import RAW_PREFIX, object_key

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "streaming" / "schemas" / "vqe_result_v3.avsc"
DEFAULT_TOPIC = "vqe_result_v3.sto3g-jordan_wigner-uccsd-statevector-cpu"

# H2 / STO-3G at 0.735 angstrom (energies in hartree) - the values are only used as plausible numbers.
H2_HF = -1.1169989967540044
H2_EXACT = -1.1373060357533995
H2_NUCLEAR_REPULSION = 0.7199689944489797
H2_TERMS = [
    ("IIII", -0.8105479805373279),
    ("IIIZ", 0.17218393261915543),
    ("IIZI", -0.22575349222402372),
    ("IZII", 0.17218393261915543),
    ("ZIII", -0.22575349222402372),
    ("IIZZ", 0.12091263261776627),
    ("IZIZ", 0.16892753870087907),
    ("XXYY", -0.045232799946057826),
    ("YYYY", 0.045232799946057826),
]


def load_v3_schema() -> dict[str, Any]:
    """The VQE result contract (v3) as parsed JSON."""
    return json.loads(SCHEMA_PATH.read_text())


OLDER_SCHEMA_DROPPED_FIELDS = ("request_id", "error_vs_exact_mha", "performance_snapshots")


def older_writer_schema() -> dict[str, Any]:
    """A plausible older result schema: v3 without the fields v3 added with defaults.

    Files written with it must still read with v3 as reader schema (the dropped fields take defaults).
    """
    schema = load_v3_schema()
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in OLDER_SCHEMA_DROPPED_FIELDS]
    return schema


def load_v4_schema() -> dict[str, Any]:
    """The v4 result schema (v3 plus optional kernel, noise, ADAPT and scan fields) as parsed JSON."""
    return json.loads(SCHEMA_PATH.with_name("vqe_result_v4.avsc").read_text())


def as_v4(record: dict[str, Any], *, scan_id: str = "scan-0001", point: int = 0) -> dict[str, Any]:
    """``record`` (v3 contract) with every v4 field set: an ADAPT run on the sector kernel, point ``point``
    of a 3-point H2 scan ``scan_id`` (0.70 + 0.05 x point angstrom); a scan point has no experiment key
    (never reused) and was computed (``reused_from`` null)."""
    operators = [f"0,2->{1 + i % 2},3" for i in range(len(record["iterations"]))]
    return {
        **record,
        "backend": {**record["backend"], "kernel": "sector", "noise_model": None},
        "iterations": [
            {**it, "operator": op} for it, op in zip(record["iterations"], operators, strict=True)
        ],
        "adapt": {"gradient_threshold": 1e-4, "max_operators": 150, "operators": operators},
        "scan_id": scan_id,
        "scan_point": {"index": point, "num_points": 3, "atoms": [0, 1], "distance": 0.70 + 0.05 * point},
        "experiment_key": None,
        "reused_from": None,
    }


def iteration_energy(run_index: int, iteration: int) -> float:
    """Energy (hartree) of 1-based ``iteration`` of synthetic run ``run_index``: decays onto exact."""
    return H2_EXACT + (0.02 + 0.001 * run_index) * math.exp(-0.5 * (iteration - 1))


def parameter_value(run_index: int, iteration: int, parameter_index: int) -> float:
    """Parameter ``parameter_index`` (0-based) at ``iteration`` (0 = initial point) of run ``run_index``."""
    return round(0.01 * (parameter_index + 1) + 0.001 * run_index + 0.0001 * iteration, 10)


def make_result(
    run_index: int,
    event_time: datetime,
    *,
    num_iterations: int = 5,
    num_parameters: int = 3,
    num_terms: int | None = None,
    run_id: str | None = None,
    molecule_name: str = "H2",
) -> dict[str, Any]:
    """One VQE result record (v3 contract) for synthetic run ``run_index`` finishing at ``event_time`` (UTC).

    run_id defaults to ``run-<run_index:06d>``; iterations are 1-based; ``num_terms`` Pauli terms are
    taken cyclically from the H2 Hamiltonian (default: all 9).
    """
    terms = H2_TERMS if num_terms is None else [H2_TERMS[i % len(H2_TERMS)] for i in range(num_terms)]
    started_at = event_time - timedelta(seconds=2 + num_iterations * 0.1)
    iterations = []
    cumulative = math.inf
    for it in range(1, num_iterations + 1):
        energy = iteration_energy(run_index, it)
        cumulative = min(cumulative, energy)
        iterations.append(
            {
                "iteration": it,
                "energy": energy,
                "std": None,
                "gradient_norm": 0.1 * math.exp(-0.5 * it),
                "parameter_delta_norm": 0.01 / it,
                "cumulative_min_energy": cumulative,
                "nfev": 2 * it,
                "parameters": [parameter_value(run_index, it, p) for p in range(num_parameters)],
                "timestamp": started_at + timedelta(seconds=1 + 0.1 * it),
            }
        )
    final_energy = iterations[-1]["energy"] if iterations else H2_HF
    return {
        "run_id": f"run-{run_index:06d}" if run_id is None else run_id,
        "request_id": f"req-{run_index:06d}",
        "experiment_id": f"exp-{molecule_name.lower()}-sto3g",
        "event_time": event_time,
        "started_at": started_at,
        "molecule": {
            "name": molecule_name,
            "symbols": ["H", "H"],
            "coords": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.735]],
            "charge": 0,
            "multiplicity": 1,
            "units": "angstrom",
            "masses": None,
            "num_electrons": 2,
        },
        "basis": "sto3g",
        "mapper": "jordan_wigner",
        "active_space": {
            "freeze_core": False,
            "active_electrons": None,
            "active_orbitals": None,
            "num_spatial_orbitals": 2,
            "num_alpha": 1,
            "num_beta": 1,
            "num_qubits": 4,
        },
        "ansatz": {
            "name": "uccsd",
            "reps": 1,
            "num_parameters": num_parameters,
            "num_qubits": 4,
            "depth": 7,
            "initial_state": "hartree_fock",
            "circuit_qasm3": 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nx q[0];\nx q[2];\n',
        },
        "optimizer": {
            "name": "L-BFGS-B",
            "options_json": json.dumps({"maxiter": num_iterations}),
            "max_iterations": num_iterations,
            "max_evaluations": None,
        },
        "backend": {
            "method": "statevector",
            "shots": None,
            "device_requested": "CPU",
            "device_used": "CPU",
            "seed": 1000 + run_index,
        },
        "initial_parameters": [parameter_value(run_index, 0, p) for p in range(num_parameters)],
        "optimal_parameters": list(iterations[-1]["parameters"]) if iterations else [],
        "hamiltonian_terms": [{"pauli": p, "coeff_real": c, "coeff_imag": 0.0} for p, c in terms],
        "iterations": iterations,
        "reference_energies": {
            "hf": H2_HF,
            "exact": H2_EXACT,
            "exact_method": "sparse_eigsh_sector",
            "nuclear_repulsion": H2_NUCLEAR_REPULSION,
        },
        "electronic_energy": final_energy - H2_NUCLEAR_REPULSION,
        "total_energy": final_energy,
        "error_vs_exact_mha": (final_energy - H2_EXACT) * 1000.0,
        "optimizer_result": {
            "success": True,
            "nfev": 2 * num_iterations,
            "nit": num_iterations,
            "message": "CONVERGENCE",
        },
        "timings": {"hamiltonian_s": 0.5, "mapping_s": 0.1, "vqe_s": 1.5, "total_s": 2.1},
        "package_versions": {"qiskit": "2.6.1", "qiskit-aer": "0.18.2", "qp-assets": "0.1.0"},
        "performance_snapshots": [
            {
                "timestamp": started_at + timedelta(seconds=k),
                "cpu_percent": 50.0 + k,
                "memory_percent": 10.0 + k,
                "process_rss_bytes": 100_000_000 + 1_000_000 * k,
                "gpu_utilization_percent": None,
                "gpu_memory_used_bytes": None,
            }
            for k in range(2)
        ],
    }


def landed_key(topic: str, partition: int, offset: int, when: datetime) -> str:
    """Object key (below the bucket / root folder) of a landed file, as the Connect sink names it
    (:func:`qp_assets.landing.object_key`)."""
    return object_key(topic, partition, offset, when)


def avro_bytes(records: Iterable[dict[str, Any]], schema: dict[str, Any] | None = None) -> bytes:
    """An Avro object container file (deflate) holding ``records`` written with ``schema`` (default v3)."""
    parsed = fastavro.parse_schema(schema or load_v3_schema())
    buf = io.BytesIO()
    fastavro.writer(buf, parsed, list(records), codec="deflate")
    return buf.getvalue()


@dataclass
class LandingSink:
    """Where landed files go: a local folder (``local_root``) or S3 (``s3_client`` + ``bucket``).

    ``prefix`` is prepended to every key (e.g. a unique test prefix ``tests/<uuid>/``), so the raw
    root read by the build is ``<prefix>raw/topics``.
    """

    local_root: Path | None = None
    s3_client: Any = None
    bucket: str | None = None
    prefix: str = ""

    def put(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``prefix + key``; return the full URI (file:// or s3a://)."""
        full = f"{self.prefix}{key}"
        if self.local_root is not None:
            path = Path(self.local_root) / full
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return f"file://{path.resolve()}"
        self.s3_client.put_object(Bucket=self.bucket, Key=full, Body=data)
        return f"s3a://{self.bucket}/{full}"

    @property
    def raw_root(self) -> str:
        """URI of ``raw/topics`` under this sink (what ``build_day(raw_root=...)`` takes)."""
        if self.local_root is not None:
            return f"file://{(Path(self.local_root) / f'{self.prefix}raw' / 'topics').resolve()}"
        return f"s3a://{self.bucket}/{self.prefix}{RAW_PREFIX.rstrip('/')}"


def write_landed_file(
    sink: LandingSink,
    records: list[dict[str, Any]],
    *,
    topic: str = DEFAULT_TOPIC,
    partition: int = 0,
    offset: int = 0,
    when: datetime | None = None,
    schema: dict[str, Any] | None = None,
) -> str:
    """Write one landed Avro file of ``records``; the hour folder comes from ``when`` (default: first
    record's event_time). Returns the file URI."""
    when = when or records[0]["event_time"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return sink.put(landed_key(topic, partition, offset, when.astimezone(UTC)), avro_bytes(records, schema))


# --- the golden input of the feature tests -------------------------------------------------------------

GOLDEN_DAY1 = date(2026, 1, 14)
GOLDEN_DAY2 = date(2026, 1, 15)
GOLDEN_TOPIC_B = "vqe_result_v3.sto3g-parity-uccsd-statevector-cpu"


@dataclass(frozen=True)
class GoldenFile:
    """One landed file of the golden input: where it lands and the records it holds."""

    topic: str
    partition: int
    offset: int
    landed_at: datetime
    records: tuple[dict[str, Any], ...]

    def write(self, sink: LandingSink) -> str:
        return write_landed_file(
            sink,
            list(self.records),
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            when=self.landed_at,
        )


def _at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC)


def golden_files() -> list[GoldenFile]:
    """Two days, two topics, 7 runs with different sizes:

    * day 1, topic A, hour 10: runs 0, 1, 2 (3, 4, 5 iterations; 3 parameters; 9 Pauli terms)
    * day 1, topic B, hour 23: run 3 (4 iterations, 2 parameters, 5 terms)
    * day 2, topic B, hour 00: run 7 finished on day 1 at 23:59:59 but landed after midnight
    * day 2, topic A, hour 08: runs 4, 5 (5 and 6 iterations)
    So day 1 has runs 0, 1, 2, 3, 7 and day 2 has runs 4, 5. ``golden_late_file()`` adds run 6 to day 1.
    """
    d1, d2 = GOLDEN_DAY1, GOLDEN_DAY2
    return [
        GoldenFile(
            DEFAULT_TOPIC,
            0,
            0,
            _at(d1, 10),
            tuple(make_result(i, _at(d1, 10, i), num_iterations=3 + i) for i in range(3)),
        ),
        GoldenFile(
            GOLDEN_TOPIC_B,
            0,
            0,
            _at(d1, 23),
            (make_result(3, _at(d1, 23, 30), num_iterations=4, num_parameters=2, num_terms=5),),
        ),
        GoldenFile(
            GOLDEN_TOPIC_B,
            0,
            1,
            _at(d2, 0, 0, 5),
            (make_result(7, _at(d1, 23, 59, 59), num_iterations=3, num_parameters=2, num_terms=5),),
        ),
        GoldenFile(
            DEFAULT_TOPIC,
            0,
            3,
            _at(d2, 8),
            tuple(make_result(i, _at(d2, 8, i), num_iterations=i + 1) for i in (4, 5)),
        ),
    ]


def golden_late_file() -> GoldenFile:
    """A file landing on day 1 after day 1 was built: run 6 (2 iterations, 3 parameters, 9 terms)."""
    return GoldenFile(
        DEFAULT_TOPIC,
        1,
        50,
        _at(GOLDEN_DAY1, 15),
        (make_result(6, _at(GOLDEN_DAY1, 15, 1), num_iterations=2),),
    )


def expected_rows(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Rows each data table must hold for ``records`` (counted from the records' own arrays)."""
    recs = list(records)
    per_run = len(recs)
    return {
        "molecules": per_run,
        "ansatz_info": per_run,
        "performance_metrics": per_run,
        "vqe_results": per_run,
        "initial_parameters": sum(len(r["initial_parameters"]) for r in recs),
        "optimal_parameters": sum(len(r["optimal_parameters"]) for r in recs),
        "vqe_iterations": sum(len(r["iterations"]) for r in recs),
        "iteration_parameters": sum(len(it["parameters"]) for r in recs for it in r["iterations"]),
        "hamiltonian_terms": sum(len(r["hamiltonian_terms"]) for r in recs),
    }


def records_of_day(files: Iterable[GoldenFile], day: date) -> list[dict[str, Any]]:
    """Records whose event_time falls on ``day`` (UTC), whatever folder they landed in."""
    return [r for f in files for r in f.records if r["event_time"].astimezone(UTC).date() == day]
