"""What every column of the ten feature tables and the two ML tables means: the one home of column
descriptions.

A column name means the same thing in every table that has it (``COLUMNS``); ``OVERRIDES`` holds the few
(table, column) pairs where it does not (``value``, ``nfev``, ``error_vs_exact_mha``, ...). A description is
our own text (meaning, units, how the transform in ``transforms.py`` derives it) with the ``doc`` of the
``vqe_result_v3.avsc`` field it is read from, when that field has one (after the text, or where the text
says ``{avro}``) (``ColumnDoc.avro``: a dotted
path such as ``molecule.coords`` or ``iterations.energy``; arrays of records are walked into).

Readers: the Dagster column schema (``qp_assets.assets.features``) and the Iceberg column comments
(``transforms.create_table_sql``), so the Dagster UI, PyIceberg and Spark show the same words.

Units follow the contract: energies in hartree (Ha; ``*_mha`` in milli-hartree), coordinates in angstrom,
times in seconds, memory in bytes, utilisation in percent (0-100), timestamps in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from qp_assets.streaming.schemas import RESULT_SCHEMA, schema_dict

#: The contract version the transforms read landed Avro with (see ``transforms`` module docstring).
CONTRACT_VERSION = 3


@dataclass(frozen=True)
class ColumnDoc:
    """Our description of a column, and the contract field (dotted path) whose Avro ``doc`` follows it."""

    text: str  #: ``{avro}`` marks where the Avro doc goes (default: after the text)
    avro: str | None = None


COLUMNS: dict[str, ColumnDoc] = {
    # -- identity and time (most tables) --
    "run_id": ColumnDoc("The VQE run this row belongs to.", "run_id"),
    "event_date": ColumnDoc(
        "Partition column: UTC day of event_time (the day the run finished).",
    ),
    "event_time": ColumnDoc("{avro}", "event_time"),
    "experiment_id": ColumnDoc(
        "{avro} sha256, 32 hex chars; iteration and evaluation budgets are not part of it either, so "
        "repeats of one experiment (other seeds) share it.",
        "experiment_id",
    ),
    "request_id": ColumnDoc(
        "{avro} The feature build keeps one run per request (the latest); null for runs started "
        "without a request.",
        "request_id",
    ),
    "started_at": ColumnDoc("Run start time, UTC timestamp.", "started_at"),
    # -- molecule --
    "molecule_name": ColumnDoc("Molecule name as given in the request (e.g. H2, LiH).", "molecule.name"),
    "symbols": ColumnDoc("Element symbol of each atom, in geometry order.", "molecule.symbols"),
    "coords_angstrom": ColumnDoc(
        "Cartesian coordinates [x, y, z] of each atom in angstrom, same order as symbols.", "molecule.coords"
    ),
    "num_atoms": ColumnDoc("Number of atoms (length of symbols).", None),
    "charge": ColumnDoc("Net molecular charge (units of e).", "molecule.charge"),
    "multiplicity": ColumnDoc("Spin multiplicity 2S+1 (1 = singlet).", "molecule.multiplicity"),
    "input_units": ColumnDoc(
        "{avro} angstrom or bohr; coords_angstrom is always angstrom.",
        "molecule.units",
    ),
    "masses": ColumnDoc(
        "Atomic masses (atomic mass units) given in the request, same order as symbols; null when none were given.",
        "molecule.masses",
    ),
    "num_electrons": ColumnDoc(
        "Total number of electrons of the molecule (before any active space).", "molecule.num_electrons"
    ),
    "basis": ColumnDoc("Gaussian basis set of the electronic-structure problem (e.g. sto-3g).", "basis"),
    # -- qubit mapping, active space, ansatz --
    "mapper": ColumnDoc("Fermion-to-qubit mapping, one of:", "mapper"),
    "freeze_core": ColumnDoc(
        "True when core orbitals were frozen (removed from the active space).", "active_space.freeze_core"
    ),
    "active_electrons": ColumnDoc(
        "Active-space electrons requested; null = no active-space reduction requested.",
        "active_space.active_electrons",
    ),
    "active_orbitals": ColumnDoc(
        "Active-space spatial orbitals requested; null = no active-space reduction requested.",
        "active_space.active_orbitals",
    ),
    "num_spatial_orbitals": ColumnDoc("{avro}", "active_space.num_spatial_orbitals"),
    "num_alpha": ColumnDoc(
        "Spin-up (alpha) electrons of the problem the VQE solved.", "active_space.num_alpha"
    ),
    "num_beta": ColumnDoc(
        "Spin-down (beta) electrons of the problem the VQE solved.", "active_space.num_beta"
    ),
    "num_qubits": ColumnDoc(
        "Number of qubits of the qubit Hamiltonian and the ansatz circuit.", "active_space.num_qubits"
    ),
    "ansatz_name": ColumnDoc(
        "Ansatz (parametrised circuit family): uccsd, puccd, succd, adapt, efficient_su2, real_amplitudes or excitation_preserving.",
        "ansatz.name",
    ),
    "reps": ColumnDoc("Ansatz repetitions (layers) requested.", "ansatz.reps"),
    "ansatz_reps": ColumnDoc("Ansatz repetitions (layers) requested (ansatz_info.reps).", "ansatz.reps"),
    "num_parameters": ColumnDoc(
        "Number of variational parameters of the ansatz (for adapt: of the final grown ansatz).",
        "ansatz.num_parameters",
    ),
    "depth": ColumnDoc("Depth of the recorded ansatz circuit (number of gate layers).", "ansatz.depth"),
    "initial_state": ColumnDoc("Reference state the ansatz starts from, one of:", "ansatz.initial_state"),
    "circuit_qasm3": ColumnDoc("{avro}", "ansatz.circuit_qasm3"),
    # -- optimizer and backend configuration --
    "optimizer_name": ColumnDoc(
        "Classical optimizer: a scipy.optimize.minimize method (e.g. L-BFGS-B, COBYLA) or SPSA.",
        "optimizer.name",
    ),
    "optimizer_options_json": ColumnDoc(
        "Optimizer options as recorded by the runner (JSON object, sorted keys).", "optimizer.options_json"
    ),
    "max_iterations": ColumnDoc(
        "Iteration budget of the optimizer; null = no budget.", "optimizer.max_iterations"
    ),
    "backend_method": ColumnDoc("Qiskit Aer simulation method, one of:", "backend.method"),
    "shots": ColumnDoc("Measurement shots per energy estimate.", "backend.shots"),
    "device_requested": ColumnDoc(
        "Device the request asked for: CPU, GPU or auto.", "backend.device_requested"
    ),
    "device_used": ColumnDoc("Device the simulation ran on:", "backend.device_used"),
    "seed": ColumnDoc(
        "Random seed of the run (initial parameters, SPSA, shot sampling); null = unseeded.", "backend.seed"
    ),
    # -- energies (hartree) --
    "hf_energy": ColumnDoc("{avro} Unit: hartree.", "reference_energies.hf"),
    "exact_energy": ColumnDoc("{avro} Unit: hartree; null when not computed.", "reference_energies.exact"),
    "exact_method": ColumnDoc("How exact_energy was computed,", "reference_energies.exact_method"),
    "nuclear_repulsion_energy": ColumnDoc(
        "Nuclear repulsion energy, hartree.", "reference_energies.nuclear_repulsion"
    ),
    "electronic_energy": ColumnDoc("Final VQE energy minus nuclear repulsion, hartree.", "electronic_energy"),
    "total_energy": ColumnDoc("{avro}", "total_energy"),
    "error_vs_exact_mha": ColumnDoc(
        "Final VQE error vs the exact reference, milli-hartree: (total_energy - exact_energy) * 1000 "
        "(as recorded by the run, else computed); negative only when the state left the particle sector; "
        "null without an exact reference.",
        "error_vs_exact_mha",
    ),
    "error_vs_hf_mha": ColumnDoc(
        "Final VQE energy minus Hartree-Fock energy, milli-hartree: (total_energy - hf_energy) * 1000 "
        "(negative = VQE recovered correlation energy below HF).",
    ),
    "minimum_iteration_energy": ColumnDoc(
        "Lowest energy over the run's recorded iterations, hartree; null when the run has no iterations.",
    ),
    # -- optimizer outcome --
    "num_iterations": ColumnDoc(
        "Number of recorded optimizer iterations (rows of vqe_iterations of the run).", None
    ),
    "optimizer_success": ColumnDoc(
        "Optimizer's own success flag; false also when the iteration budget stopped it.",
        "optimizer_result.success",
    ),
    "optimizer_nfev": ColumnDoc(
        "Energy evaluations of the whole run, including the final evaluation at the optimal parameters (cached points are not re-counted).",
        "optimizer_result.nfev",
    ),
    "optimizer_nit": ColumnDoc(
        "Optimizer iterations recorded by the runner (equals num_iterations).", "optimizer_result.nit"
    ),
    "optimizer_message": ColumnDoc(
        "Optimizer's termination message (or 'stopped: ...' when a budget stopped it).",
        "optimizer_result.message",
    ),
    # -- timings (seconds) --
    "hamiltonian_s": ColumnDoc(
        "Seconds to build the electronic-structure problem (PySCF integrals and Hartree-Fock, core freezing and active-space reduction).",
        "timings.hamiltonian_s",
    ),
    "mapping_s": ColumnDoc("Seconds to map the fermionic Hamiltonian to qubits.", "timings.mapping_s"),
    "vqe_s": ColumnDoc("Seconds spent in the VQE optimisation loop.", "timings.vqe_s"),
    "total_s": ColumnDoc("Wall-clock seconds of the whole run, from start to result.", "timings.total_s"),
    "seconds_per_iteration": ColumnDoc(
        "vqe_s / num_iterations, seconds; null when the run has no iterations.",
    ),
    # -- resource use (aggregates of the run's performance snapshots) --
    "snapshot_count": ColumnDoc("Number of performance snapshots the monitor took during the run.", None),
    "cpu_percent_mean": ColumnDoc(
        "Mean system-wide CPU use over the run's snapshots, percent (0-100); null without snapshots.",
        "performance_snapshots.cpu_percent",
    ),
    "cpu_percent_max": ColumnDoc(
        "Peak system-wide CPU use over the run's snapshots, percent (0-100).",
        "performance_snapshots.cpu_percent",
    ),
    "memory_percent_max": ColumnDoc(
        "Peak system-wide used RAM over the run's snapshots, percent (0-100).",
        "performance_snapshots.memory_percent",
    ),
    "peak_rss_bytes": ColumnDoc(
        "Peak resident memory of the VQE process over the run's snapshots, bytes.",
        "performance_snapshots.process_rss_bytes",
    ),
    "gpu_utilization_percent_max": ColumnDoc(
        "Peak GPU utilisation over the run's snapshots, percent (0-100); null without a GPU (NVML).",
        "performance_snapshots.gpu_utilization_percent",
    ),
    "gpu_memory_used_bytes_max": ColumnDoc(
        "Peak GPU memory in use over the run's snapshots, bytes; null without a GPU (NVML).",
        "performance_snapshots.gpu_memory_used_bytes",
    ),
    # -- provenance --
    "package_versions": ColumnDoc(
        "Versions of the packages the run used (package -> version), plus 'kernel' (sector or aer) and "
        "'noise_model' when a noise model was set.",
        "package_versions",
    ),
    "source_file": ColumnDoc("Landed Avro object (S3 URI) the run was read from.", None),
    # -- result reuse (docs/vqe.md, Result reuse) --
    "experiment_key": ColumnDoc(
        "{avro} Unlike experiment_id it includes the seed, the budgets and the code version.",
        "experiment_key",
    ),
    "reused_from": ColumnDoc(
        "{avro} The row's energies, iterations and parameters are then that request's, identical.",
        "reused_from",
    ),
    # -- positional keys --
    "parameter_index": ColumnDoc("0-based position of the parameter in the ansatz parameter vector.", None),
    "iteration": ColumnDoc("{avro}", "iterations.iteration"),
    "term_index": ColumnDoc("0-based position of the Pauli term in the run's qubit Hamiltonian.", None),
    # -- per-iteration trace (vqe_iterations) --
    "energy": ColumnDoc("{avro}", "iterations.energy"),
    "std": ColumnDoc(
        "{avro} Unit: hartree; null for exact expectation values.",
        "iterations.std",
    ),
    "gradient_norm": ColumnDoc(
        "Euclidean norm of the energy gradient at this iterate, hartree per radian; null when no gradient "
        "was computed (gradient-free optimizers, shots); for adapt: |dE/dtheta| of the operator selected.",
        "iterations.gradient_norm",
    ),
    "parameter_delta_norm": ColumnDoc(
        "Euclidean norm of the parameter step from the previous iterate (the initial point for iteration 1), "
        "radians.",
        "iterations.parameter_delta_norm",
    ),
    "cumulative_min_energy": ColumnDoc(
        "Lowest energy seen up to and including this iteration, hartree.", "iterations.cumulative_min_energy"
    ),
    "iteration_timestamp": ColumnDoc(
        "When the iteration was recorded, UTC timestamp.", "iterations.timestamp"
    ),
    # -- ML tables (features/ml_tables.py) --
    "energy_delta": ColumnDoc(
        "Energy at this iteration minus the energy at the previous iteration of the run, hartree "
        "(negative = the energy went down); null for the run's first iteration.",
    ),
    "energy_rolling_mean_5": ColumnDoc(
        "Mean energy over the last 5 iterations of the run (this one and up to 4 before it), hartree.",
    ),
    "energy_rolling_std_5": ColumnDoc(
        "Population standard deviation of the energy over the last 5 iterations of the run (this one and "
        "up to 4 before it), hartree; 0 at the first iteration.",
    ),
    "within_chemical_accuracy": ColumnDoc(
        "True when |error_vs_exact_mha| <= 1.6 milli-hartree (chemical accuracy, 1 kcal/mol) at this "
        "iteration; null without an exact reference.",
    ),
    "convergence_iteration": ColumnDoc(
        "First iteration whose energy lies within 1.6 milli-hartree (chemical accuracy) of the exact "
        "energy, 1-based; null when no iteration got there (or without an exact reference).",
    ),
    # -- Hamiltonian terms --
    "pauli": ColumnDoc("{avro} One character (I, X, Y or Z) per qubit.", "hamiltonian_terms.pauli"),
    "coeff_real": ColumnDoc(
        "Real part of the term's coefficient, hartree (constant shifts such as nuclear repulsion are not terms).",
        "hamiltonian_terms.coeff_real",
    ),
    "coeff_imag": ColumnDoc(
        "Imaginary part of the term's coefficient, hartree (0 for a Hermitian Hamiltonian).",
        "hamiltonian_terms.coeff_imag",
    ),
    "pauli_weight": ColumnDoc("Number of non-identity factors (X, Y, Z) in the Pauli string.", None),
    # -- processing_metadata (one row per built day and build) --
    "processing_id": ColumnDoc("UUID of this build of this day.", None),
    "dagster_run_id": ColumnDoc(
        "Dagster run that built the day (null for a CLI build without --run-id).", None
    ),
    "processed_at": ColumnDoc("When the build wrote this row, UTC timestamp.", None),
    "spark_master": ColumnDoc("Where Spark computed: its master URL, or 'spark-connect (<master>)'.", None),
    "raw_root": ColumnDoc("Landing root the build read raw Avro from (S3 URI or local path).", None),
    "source_files": ColumnDoc("Landed Avro objects of the day the build read (sorted URIs).", None),
    "source_file_count": ColumnDoc("Number of source_files.", None),
    "runs": ColumnDoc("Valid runs of the day written to the data tables (after dropping duplicates).", None),
    "row_counts": ColumnDoc("Rows written per table for the day (table -> rows).", None),
    "snapshot_ids": ColumnDoc("Iceberg snapshot id per table after the build (table -> snapshot id).", None),
    "bad_files": ColumnDoc("Landed objects of the day that could not be decoded as Avro (skipped).", None),
    "bad_records": ColumnDoc("Records of the day that violated the contract (skipped, not written).", None),
    "bad_record_reasons": ColumnDoc("Skipped records per reason (reason -> count).", None),
    "duration_s": ColumnDoc("Seconds from the start of the build to this row.", None),
}

#: (table, column) -> description where a column means something else in that table.
OVERRIDES: dict[tuple[str, str], ColumnDoc] = {
    ("initial_parameters", "value"): ColumnDoc(
        "Starting value of the parameter (the optimizer's initial point), radians.", "initial_parameters"
    ),
    ("optimal_parameters", "value"): ColumnDoc(
        "Final value of the parameter (the optimizer's result), radians.", "optimal_parameters"
    ),
    ("iteration_parameters", "value"): ColumnDoc(
        "Value of the parameter at this iteration, radians.", "iterations.parameters"
    ),
    ("vqe_iterations", "nfev"): ColumnDoc("{avro} Cumulative since the start of the run.", "iterations.nfev"),
    ("performance_metrics", "nfev"): ColumnDoc(
        "Energy evaluations of the whole optimisation (vqe_results.optimizer_nfev).", "optimizer_result.nfev"
    ),
    ("vqe_iterations", "error_vs_exact_mha"): ColumnDoc(
        "Energy at this iteration minus the exact reference, milli-hartree: (energy - exact_energy) * 1000; "
        "null without an exact reference.",
    ),
    ("vqe_iterations", "num_parameters"): ColumnDoc(
        "Length of the parameter vector at this iteration (grows per step for adapt).", None
    ),
    ("hamiltonian_terms", "num_qubits"): ColumnDoc("Number of qubits (length of the Pauli string).", None),
    ("processing_metadata", "event_date"): ColumnDoc("Partition column: the UTC day this build built."),
    ("ml_iteration_features", "error_vs_exact_mha"): ColumnDoc(
        "Distance of this iteration's energy to the exact reference, milli-hartree: "
        "(energy - exact_energy) * 1000 (vqe_iterations.error_vs_exact_mha); null without an exact reference.",
    ),
    ("ml_run_summary", "initial_state"): ColumnDoc(
        "Initial state and parameter strategy of the run: hartree_fock (HF reference, zero parameters), "
        "random (HF reference, seeded random parameters) or zeros (|0...0>, zero parameters).",
    ),
}


def _walk(fields: list[dict[str, Any]], parts: list[str], path: str) -> dict[str, Any]:
    for f in fields:
        if f["name"] != parts[0]:
            continue
        if len(parts) == 1:
            return f
        t = f["type"]
        t = next((b for b in t if b != "null"), t) if isinstance(t, list) else t
        if isinstance(t, dict) and t.get("type") == "array":
            t = t["items"]
        if not isinstance(t, dict) or "fields" not in t:
            break
        return _walk(t["fields"], parts[1:], path)
    raise KeyError(f"ColumnDoc.avro: {path!r} is not a field of {RESULT_SCHEMA} v{CONTRACT_VERSION}")


@cache
def avro_doc(path: str) -> str:
    """The ``doc`` of the contract field at dotted ``path`` ('' when it has none), or of the current result
    schema's field for the fields read beyond the contract (``experiment_key``, ``reused_from``); KeyError
    if neither has it."""
    try:
        field = _walk(schema_dict(RESULT_SCHEMA, CONTRACT_VERSION)["fields"], path.split("."), path)
    except KeyError:
        field = _walk(schema_dict(RESULT_SCHEMA)["fields"], path.split("."), path)
    return str(field.get("doc", ""))


def column_doc(table: str, column: str) -> ColumnDoc:
    """The ColumnDoc of ``column`` in ``table`` (override first); KeyError naming both if undocumented."""
    doc = OVERRIDES.get((table, column)) or COLUMNS.get(column)
    if doc is None:
        raise KeyError(f"column {column!r} of table {table!r} has no description in features/columns.py")
    return doc


KEY_PREFIX = "Key. "


def describe(table: str, column: str, is_key: bool = False) -> str:
    """Description of ``column`` in ``table``: our text with the contract field's Avro doc (if it has one);
    ``is_key`` (the column is part of the table's row key) prefixes ``KEY_PREFIX``."""
    prefix = KEY_PREFIX if is_key else ""
    return prefix + _text(table, column)


def _text(table: str, column: str) -> str:
    doc = column_doc(table, column)
    extra = avro_doc(doc.avro) if doc.avro else ""
    if "{avro}" in doc.text:
        if not extra:
            raise ValueError(f"{table}.{column}: text uses {{avro}} but {doc.avro!r} has no Avro doc")
        return doc.text.replace("{avro}", extra)
    if not extra:
        return doc.text
    joined = doc.text if doc.text.endswith((".", ":", ",", ")")) else doc.text + "."
    return f"{joined} {extra}"
