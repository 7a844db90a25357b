"""Generates infra/grafana/dashboards/quantum_pipeline.json (run after editing; commit both files).

    .venv/bin/python infra/grafana/generate_dashboard.py

The panels are declared in reading order with the typed builder of ``dashboard.py`` (it lays them out,
numbers them and names their queries). Every metric queried here must be exported by qp_assets.monitoring
(checked by tests/test_monitoring_units.py statically and tests/test_monitoring_services.py against
Prometheus).
"""

# ruff: noqa: E501
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard import Dashboard, Panel, Target, Variable  # noqa: E402

OUT = Path(__file__).resolve().parent / "dashboards" / "quantum_pipeline.json"
SEL = 'molecule=~"$molecule",basis_set=~"$basis_set",device=~"$device"'

d = Dashboard(
    uid="quantum-pipeline",
    title="Quantum Pipeline: VQE runs and pipeline health",
    description="VQE energies vs exact references, convergence cost, resources, GPU and pipeline health. Metrics from qp_assets.monitoring (PushGateway job=quantum_pipeline / quantum_pipeline_health).",
    tags=["quantum", "vqe", "pipeline"],
    variables=[
        Variable("molecule", "Molecule", "quantum_vqe_minimum_energy"),
        Variable("basis_set", "Basis set", "quantum_vqe_minimum_energy"),
        Variable("device", "Device", "quantum_vqe_minimum_energy"),
    ],
)
d.row("VQE energy and accuracy")
d.add(
    Panel(
        "timeseries",
        "VQE minimum energy vs exact reference (Ha)",
        "Lowest final VQE total energy per molecule/basis/ansatz (solid) and the exact FCI reference in the same space (dashed).",
        [
            Target(
                f"min by (molecule, basis_set, ansatz) (quantum_vqe_minimum_energy{{{SEL}}})",
                "VQE {{molecule}}/{{basis_set}} {{ansatz}}",
            ),
            Target(
                f"min by (molecule, basis_set) (quantum_vqe_exact_energy{{{SEL}}})",
                "exact {{molecule}}/{{basis_set}}",
            ),
            Target(
                f"min by (molecule, basis_set) (quantum_vqe_hf_energy{{{SEL}}})",
                "HF {{molecule}}/{{basis_set}}",
            ),
        ],
        w=12,
        h=9,
        unit="none",
        decimals=6,
        extra={
            "fieldConfig": {
                "defaults": {"unit": "none", "decimals": 6, "custom": {"lineWidth": 2}},
                "overrides": [
                    {
                        "matcher": {"id": "byFrameRefID", "options": "B"},
                        "properties": [
                            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
                        ],
                    },
                    {
                        "matcher": {"id": "byFrameRefID", "options": "C"},
                        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dot", "dash": [2, 6]}}],
                    },
                ],
            }
        },
    )
)
d.add(
    Panel(
        "timeseries",
        "Error vs exact (mHa)",
        "|E_VQE - E_exact| in millihartree per molecule/basis/optimizer/ansatz (worst run). Red line: chemical accuracy 1.6 mHa.",
        [
            Target(
                f"max by (molecule, basis_set, optimizer, ansatz) (abs(quantum_vqe_error_mha{{{SEL}}}))",
                "{{molecule}}/{{basis_set}} {{optimizer}} {{ansatz}}",
            )
        ],
        w=12,
        h=9,
        unit="none",
        decimals=4,
        extra={
            "fieldConfig": {
                "defaults": {
                    "unit": "none",
                    "decimals": 4,
                    "custom": {"thresholdsStyle": {"mode": "line"}},
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1.6}],
                    },
                },
                "overrides": [],
            }
        },
    )
)
d.add(
    Panel(
        "table",
        "Runs (latest values per run)",
        "One row per VQE run (PushGateway group run_id): energies (Ha), error (mHa), iterations, evaluations, total time (s).",
        [
            Target(f"quantum_vqe_minimum_energy{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_exact_energy{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_error_mha{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_iterations_count{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_function_evaluations{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_total_time{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_num_qubits{{{SEL}}}", "", instant=True, fmt="table"),
            Target(f"quantum_vqe_run_timestamp_seconds{{{SEL}}} * 1000", "", instant=True, fmt="table"),
        ],
        w=24,
        h=9,
        extra={
            "transformations": [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            "job": True,
                            "instance": True,
                            "experiment_id": True,
                            "__name__": True,
                        },
                        "renameByName": {
                            "Value #A": "energy (Ha)",
                            "Value #B": "exact (Ha)",
                            "Value #C": "error (mHa)",
                            "Value #D": "iterations",
                            "Value #E": "evaluations",
                            "Value #F": "total (s)",
                            "Value #G": "qubits",
                            "Value #H": "finished",
                        },
                    },
                },
                {"id": "sortBy", "options": {"sort": [{"field": "finished", "desc": True}]}},
            ],
            "fieldConfig": {
                "defaults": {},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "finished"},
                        "properties": [{"id": "unit", "value": "dateTimeAsIso"}],
                    },
                    {
                        "matcher": {"id": "byName", "options": "energy (Ha)"},
                        "properties": [{"id": "decimals", "value": 8}],
                    },
                    {
                        "matcher": {"id": "byName", "options": "exact (Ha)"},
                        "properties": [{"id": "decimals", "value": 8}],
                    },
                    {
                        "matcher": {"id": "byName", "options": "error (mHa)"},
                        "properties": [{"id": "decimals", "value": 4}],
                    },
                ],
            },
        },
    )
)
d.row("Iterations and time per iteration")
d.add(
    Panel(
        "timeseries",
        "Optimizer iterations and energy evaluations",
        "Mean optimizer iterations (nit) and energy evaluations (nfev) per molecule and optimizer.",
        [
            Target(
                f"avg by (molecule, optimizer) (quantum_vqe_iterations_count{{{SEL}}})",
                "iterations {{molecule}} {{optimizer}}",
            ),
            Target(
                f"avg by (molecule, optimizer) (quantum_vqe_function_evaluations{{{SEL}}})",
                "evaluations {{molecule}} {{optimizer}}",
            ),
        ],
        w=8,
        h=8,
        unit="short",
    )
)
d.add(
    Panel(
        "timeseries",
        "Time per iteration (s)",
        "p50/p95 of per-iteration wall time (histogram quantum_vqe_iteration_seconds) and the mean VQE-loop time per iteration.",
        [
            Target(
                f"histogram_quantile(0.5, sum by (le, molecule) (quantum_vqe_iteration_seconds_bucket{{{SEL}}}))",
                "p50 {{molecule}}",
            ),
            Target(
                f"histogram_quantile(0.95, sum by (le, molecule) (quantum_vqe_iteration_seconds_bucket{{{SEL}}}))",
                "p95 {{molecule}}",
            ),
            Target(
                f"sum by (molecule) (quantum_vqe_iteration_seconds_sum{{{SEL}}}) / sum by (molecule) (quantum_vqe_iteration_seconds_count{{{SEL}}})",
                "mean (histogram) {{molecule}}",
            ),
            Target(
                f"avg by (molecule) (quantum_vqe_time_per_iteration{{{SEL}}})",
                "vqe_s / nit {{molecule}}",
            ),
        ],
        w=8,
        h=8,
        unit="s",
    )
)
d.add(
    Panel(
        "barchart",
        "Time breakdown per molecule (s)",
        "Mean seconds per run: Hamiltonian build, qubit mapping, VQE loop, total.",
        [
            Target(
                f"avg by (molecule) (quantum_vqe_hamiltonian_time{{{SEL}}})",
                "hamiltonian",
                instant=True,
                fmt="table",
            ),
            Target(
                f"avg by (molecule) (quantum_vqe_mapping_time{{{SEL}}})",
                "mapping",
                instant=True,
                fmt="table",
            ),
            Target(f"avg by (molecule) (quantum_vqe_vqe_time{{{SEL}}})", "vqe", instant=True, fmt="table"),
            Target(
                f"avg by (molecule) (quantum_vqe_total_time{{{SEL}}})",
                "total",
                instant=True,
                fmt="table",
            ),
        ],
        w=8,
        h=8,
        unit="s",
        extra={
            "transformations": [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "Value #A": "hamiltonian",
                            "Value #B": "mapping",
                            "Value #C": "vqe",
                            "Value #D": "total",
                        },
                    },
                },
            ],
            "options": {
                "xField": "molecule",
                "orientation": "horizontal",
                "showValue": "auto",
                "stacking": "none",
            },
        },
    )
)
d.row("System resources during runs")
d.add(
    Panel(
        "timeseries",
        "CPU (%)",
        "Mean and peak system-wide CPU use during each run (PerformanceMonitor snapshots).",
        [
            Target(
                f"avg by (molecule, device) (quantum_system_cpu_percent{{{SEL}}})",
                "mean {{molecule}} {{device}}",
            ),
            Target(
                f"max by (molecule, device) (quantum_system_cpu_percent_max{{{SEL}}})",
                "peak {{molecule}} {{device}}",
            ),
        ],
        w=8,
        h=8,
        unit="percent",
    )
)
d.add(
    Panel(
        "timeseries",
        "System memory (%)",
        "Peak system-wide memory use during each run.",
        [
            Target(
                f"max by (molecule, device) (quantum_system_memory_percent{{{SEL}}})",
                "{{molecule}} {{device}}",
            )
        ],
        w=8,
        h=8,
        unit="percent",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 90}],
    )
)
d.add(
    Panel(
        "timeseries",
        "VQE process RSS",
        "Peak resident memory of the VQE process per molecule.",
        [
            Target(
                f"max by (molecule, basis_set) (quantum_process_rss_bytes{{{SEL}}})",
                "{{molecule}}/{{basis_set}}",
            )
        ],
        w=8,
        h=8,
        unit="bytes",
    )
)
d.add(
    Panel(
        "timeseries",
        "Runs in progress: CPU and memory (%)",
        "Live samples pushed by PerformanceMonitor(push_url=...) while a VQE runs (job quantum_pipeline_live; the group is deleted when the run ends).",
        [
            Target(
                "max by (host, pid, molecule) (quantum_live_cpu_percent)",
                "CPU {{host}}:{{pid}} {{molecule}}",
            ),
            Target(
                "max by (host, pid, molecule) (quantum_live_memory_percent)",
                "memory {{host}}:{{pid}} {{molecule}}",
            ),
            Target(
                "max by (host, pid, molecule) (quantum_live_gpu_utilization_percent)",
                "GPU {{host}}:{{pid}} {{molecule}}",
            ),
        ],
        w=12,
        h=8,
        unit="percent",
    )
)
d.add(
    Panel(
        "timeseries",
        "Runs in progress: memory (bytes)",
        "Live process RSS and GPU memory of running VQE processes; sample age in seconds in the legend table.",
        [
            Target(
                "max by (host, pid, molecule) (quantum_live_process_rss_bytes)",
                "RSS {{host}}:{{pid}} {{molecule}}",
            ),
            Target(
                "max by (host, pid, molecule) (quantum_live_gpu_memory_used_bytes)",
                "GPU {{host}}:{{pid}} {{molecule}}",
            ),
            Target(
                "time() - max by (host, pid, molecule) (quantum_live_timestamp_seconds)",
                "age s {{host}}:{{pid}}",
            ),
        ],
        w=12,
        h=8,
        unit="bytes",
        extra={
            "fieldConfig": {
                "defaults": {"unit": "bytes"},
                "overrides": [
                    {
                        "matcher": {"id": "byFrameRefID", "options": "C"},
                        "properties": [{"id": "unit", "value": "s"}],
                    }
                ],
            }
        },
    )
)
d.row("GPU")
d.add(
    Panel(
        "stat",
        "Runs per device",
        "Runs currently held by the PushGateway, by device actually used (CPU/GPU).",
        [Target(f"count by (device) (quantum_vqe_minimum_energy{{{SEL}}})", "{{device}}", instant=True)],
        w=6,
        h=8,
        unit="short",
    )
)
d.add(
    Panel(
        "timeseries",
        "GPU utilisation (%)",
        "Mean NVIDIA GPU utilisation during GPU runs (NVML). Empty on CPU-only hosts.",
        [Target(f"avg by (molecule) (quantum_gpu_utilization_percent{{{SEL}}})", "{{molecule}}")],
        w=9,
        h=8,
        unit="percent",
    )
)
d.add(
    Panel(
        "timeseries",
        "GPU memory used",
        "Peak NVIDIA GPU memory used during GPU runs (NVML). Empty on CPU-only hosts.",
        [Target(f"max by (molecule) (quantum_gpu_memory_used_bytes{{{SEL}}})", "{{molecule}}")],
        w=9,
        h=8,
        unit="bytes",
    )
)
d.row("Pipeline health")
d.add(
    Panel(
        "timeseries",
        "Kafka consumer lag (messages)",
        "Messages not yet consumed, per consumer group and topic (e.g. the Connect S3 sink).",
        [
            Target(
                "sum by (consumer_group, topic) (quantum_pipeline_kafka_lag)",
                "{{consumer_group}} {{topic}}",
            )
        ],
        w=8,
        h=8,
        unit="short",
        thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1000}],
    )
)
d.add(
    Panel(
        "barchart",
        "Landed files per day",
        "Raw Avro files Kafka Connect wrote to object storage per UTC day.",
        [Target("max by (day) (quantum_pipeline_landed_files)", "{{day}}", instant=True, fmt="table")],
        w=8,
        h=8,
        unit="short",
        extra={"options": {"xField": "day", "orientation": "vertical", "showValue": "auto"}},
    )
)
d.add(
    Panel(
        "table",
        "Feature rows per day",
        "Rows per Iceberg feature table and UTC day (quantum_features namespace).",
        [Target("max by (day, table) (quantum_pipeline_feature_rows)", "", instant=True, fmt="table")],
        w=8,
        h=8,
        unit="short",
        extra={
            "transformations": [
                {
                    "id": "groupingToMatrix",
                    "options": {"columnField": "table", "rowField": "day", "valueField": "Value"},
                }
            ]
        },
    )
)
d.add(
    Panel(
        "stat",
        "Scrape targets up",
        "1 = Prometheus scrapes the target (PushGateway, Prometheus, schema registry).",
        [Target("max by (job) (up)", "{{job}}", instant=True)],
        w=8,
        h=4,
        unit="short",
        thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
    )
)
d.add(
    Panel(
        "stat",
        "Since last pipeline health push",
        "Seconds since quantum_pipeline_health_timestamp_seconds per component.",
        [
            Target(
                "time() - max by (component) (quantum_pipeline_health_timestamp_seconds)",
                "{{component}}",
                instant=True,
            )
        ],
        w=8,
        h=4,
        unit="s",
        thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 7200}],
    )
)
d.add(
    Panel(
        "stat",
        "Runs in the last 24 h",
        "VQE runs that finished in the last 24 hours (still held by the PushGateway).",
        [
            Target(
                f"count((time() - quantum_vqe_run_timestamp_seconds{{{SEL}}}) < 86400) or vector(0)",
                "runs",
                instant=True,
            )
        ],
        w=8,
        h=4,
        unit="short",
    )
)

if __name__ == "__main__":
    print(f"{OUT}: {d.write(OUT)} panels")
