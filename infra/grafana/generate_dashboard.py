"""Generates infra/grafana/dashboards/quantum_pipeline.json (run after editing; commit both files).

    .venv/bin/python infra/grafana/generate_dashboard.py

Every metric queried here must be exported by qp_assets.monitoring (checked by
tests/test_monitoring_units.py statically and tests/test_monitoring_services.py against Prometheus).
"""

# ruff: noqa: E501
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "quantum_pipeline.json"
DS = {"type": "prometheus", "uid": "prometheus"}
SEL = 'molecule=~"$molecule",basis_set=~"$basis_set",device=~"$device"'
panels = []
pid = [0]


def nid():
    pid[0] += 1
    return pid[0]


def row(title, y):
    panels.append(
        {
            "type": "row",
            "title": title,
            "id": nid(),
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    )


def target(expr, legend, ref, instant=False, fmt="time_series"):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def panel(ptype, title, desc, targets, grid, unit=None, extra=None, thresholds=None, decimals=None):
    defaults = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    p = {
        "type": ptype,
        "title": title,
        "description": desc,
        "id": nid(),
        "datasource": DS,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
    }
    if ptype == "timeseries":
        p["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "min"]},
            "tooltip": {"mode": "multi"},
        }
    if extra:
        for k, v in extra.items():
            p[k] = v
    panels.append(p)
    return p


y = 0
row("VQE energy and accuracy", y)
y += 1
panel(
    "timeseries",
    "VQE minimum energy vs exact reference (Ha)",
    "Lowest final VQE total energy per molecule/basis/ansatz (solid) and the exact FCI reference in the same space (dashed).",
    [
        target(
            f"min by (molecule, basis_set, ansatz) (quantum_vqe_minimum_energy{{{SEL}}})",
            "VQE {{molecule}}/{{basis_set}} {{ansatz}}",
            "A",
        ),
        target(
            f"min by (molecule, basis_set) (quantum_vqe_exact_energy{{{SEL}}})",
            "exact {{molecule}}/{{basis_set}}",
            "B",
        ),
        target(
            f"min by (molecule, basis_set) (quantum_vqe_hf_energy{{{SEL}}})",
            "HF {{molecule}}/{{basis_set}}",
            "C",
        ),
    ],
    {"h": 9, "w": 12, "x": 0, "y": y},
    unit="none",
    decimals=6,
    extra={
        "fieldConfig": {
            "defaults": {"unit": "none", "decimals": 6, "custom": {"lineWidth": 2}},
            "overrides": [
                {
                    "matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
                },
                {
                    "matcher": {"id": "byFrameRefID", "options": "C"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dot", "dash": [2, 6]}}],
                },
            ],
        }
    },
)
panel(
    "timeseries",
    "Error vs exact (mHa)",
    "|E_VQE - E_exact| in millihartree per molecule/basis/optimizer/ansatz (worst run). Red line: chemical accuracy 1.6 mHa.",
    [
        target(
            f"max by (molecule, basis_set, optimizer, ansatz) (abs(quantum_vqe_error_mha{{{SEL}}}))",
            "{{molecule}}/{{basis_set}} {{optimizer}} {{ansatz}}",
            "A",
        )
    ],
    {"h": 9, "w": 12, "x": 12, "y": y},
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
y += 9
panel(
    "table",
    "Runs (latest values per run)",
    "One row per VQE run (PushGateway group run_id): energies (Ha), error (mHa), iterations, evaluations, total time (s).",
    [
        target(f"quantum_vqe_minimum_energy{{{SEL}}}", "", "A", instant=True, fmt="table"),
        target(f"quantum_vqe_exact_energy{{{SEL}}}", "", "B", instant=True, fmt="table"),
        target(f"quantum_vqe_error_mha{{{SEL}}}", "", "C", instant=True, fmt="table"),
        target(f"quantum_vqe_iterations_count{{{SEL}}}", "", "D", instant=True, fmt="table"),
        target(f"quantum_vqe_function_evaluations{{{SEL}}}", "", "E", instant=True, fmt="table"),
        target(f"quantum_vqe_total_time{{{SEL}}}", "", "F", instant=True, fmt="table"),
        target(f"quantum_vqe_num_qubits{{{SEL}}}", "", "G", instant=True, fmt="table"),
        target(f"quantum_vqe_run_timestamp_seconds{{{SEL}}} * 1000", "", "H", instant=True, fmt="table"),
    ],
    {"h": 9, "w": 24, "x": 0, "y": y},
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
y += 9
row("Iterations and time per iteration", y)
y += 1
panel(
    "timeseries",
    "Optimizer iterations and energy evaluations",
    "Mean optimizer iterations (nit) and energy evaluations (nfev) per molecule and optimizer.",
    [
        target(
            f"avg by (molecule, optimizer) (quantum_vqe_iterations_count{{{SEL}}})",
            "iterations {{molecule}} {{optimizer}}",
            "A",
        ),
        target(
            f"avg by (molecule, optimizer) (quantum_vqe_function_evaluations{{{SEL}}})",
            "evaluations {{molecule}} {{optimizer}}",
            "B",
        ),
    ],
    {"h": 8, "w": 8, "x": 0, "y": y},
    unit="short",
)
panel(
    "timeseries",
    "Time per iteration (s)",
    "p50/p95 of per-iteration wall time (histogram quantum_vqe_iteration_seconds) and the mean VQE-loop time per iteration.",
    [
        target(
            f"histogram_quantile(0.5, sum by (le, molecule) (quantum_vqe_iteration_seconds_bucket{{{SEL}}}))",
            "p50 {{molecule}}",
            "A",
        ),
        target(
            f"histogram_quantile(0.95, sum by (le, molecule) (quantum_vqe_iteration_seconds_bucket{{{SEL}}}))",
            "p95 {{molecule}}",
            "B",
        ),
        target(
            f"sum by (molecule) (quantum_vqe_iteration_seconds_sum{{{SEL}}}) / sum by (molecule) (quantum_vqe_iteration_seconds_count{{{SEL}}})",
            "mean (histogram) {{molecule}}",
            "C",
        ),
        target(
            f"avg by (molecule) (quantum_vqe_time_per_iteration{{{SEL}}})", "vqe_s / nit {{molecule}}", "D"
        ),
    ],
    {"h": 8, "w": 8, "x": 8, "y": y},
    unit="s",
)
panel(
    "barchart",
    "Time breakdown per molecule (s)",
    "Mean seconds per run: Hamiltonian build, qubit mapping, VQE loop, total.",
    [
        target(
            f"avg by (molecule) (quantum_vqe_hamiltonian_time{{{SEL}}})",
            "hamiltonian",
            "A",
            instant=True,
            fmt="table",
        ),
        target(
            f"avg by (molecule) (quantum_vqe_mapping_time{{{SEL}}})",
            "mapping",
            "B",
            instant=True,
            fmt="table",
        ),
        target(f"avg by (molecule) (quantum_vqe_vqe_time{{{SEL}}})", "vqe", "C", instant=True, fmt="table"),
        target(
            f"avg by (molecule) (quantum_vqe_total_time{{{SEL}}})", "total", "D", instant=True, fmt="table"
        ),
    ],
    {"h": 8, "w": 8, "x": 16, "y": y},
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
y += 8
row("System resources during runs", y)
y += 1
panel(
    "timeseries",
    "CPU (%)",
    "Mean and peak system-wide CPU use during each run (PerformanceMonitor snapshots).",
    [
        target(
            f"avg by (molecule, device) (quantum_system_cpu_percent{{{SEL}}})",
            "mean {{molecule}} {{device}}",
            "A",
        ),
        target(
            f"max by (molecule, device) (quantum_system_cpu_percent_max{{{SEL}}})",
            "peak {{molecule}} {{device}}",
            "B",
        ),
    ],
    {"h": 8, "w": 8, "x": 0, "y": y},
    unit="percent",
)
panel(
    "timeseries",
    "System memory (%)",
    "Peak system-wide memory use during each run.",
    [
        target(
            f"max by (molecule, device) (quantum_system_memory_percent{{{SEL}}})",
            "{{molecule}} {{device}}",
            "A",
        )
    ],
    {"h": 8, "w": 8, "x": 8, "y": y},
    unit="percent",
    thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 90}],
)
panel(
    "timeseries",
    "VQE process RSS",
    "Peak resident memory of the VQE process per molecule.",
    [
        target(
            f"max by (molecule, basis_set) (quantum_process_rss_bytes{{{SEL}}})",
            "{{molecule}}/{{basis_set}}",
            "A",
        )
    ],
    {"h": 8, "w": 8, "x": 16, "y": y},
    unit="bytes",
)
y += 8
panel(
    "timeseries",
    "Runs in progress: CPU and memory (%)",
    "Live samples pushed by PerformanceMonitor(push_url=...) while a VQE runs (job quantum_pipeline_live; the group is deleted when the run ends).",
    [
        target(
            "max by (host, pid, molecule) (quantum_live_cpu_percent)",
            "CPU {{host}}:{{pid}} {{molecule}}",
            "A",
        ),
        target(
            "max by (host, pid, molecule) (quantum_live_memory_percent)",
            "memory {{host}}:{{pid}} {{molecule}}",
            "B",
        ),
        target(
            "max by (host, pid, molecule) (quantum_live_gpu_utilization_percent)",
            "GPU {{host}}:{{pid}} {{molecule}}",
            "C",
        ),
    ],
    {"h": 8, "w": 12, "x": 0, "y": y},
    unit="percent",
)
panel(
    "timeseries",
    "Runs in progress: memory (bytes)",
    "Live process RSS and GPU memory of running VQE processes; sample age in seconds in the legend table.",
    [
        target(
            "max by (host, pid, molecule) (quantum_live_process_rss_bytes)",
            "RSS {{host}}:{{pid}} {{molecule}}",
            "A",
        ),
        target(
            "max by (host, pid, molecule) (quantum_live_gpu_memory_used_bytes)",
            "GPU {{host}}:{{pid}} {{molecule}}",
            "B",
        ),
        target(
            "time() - max by (host, pid, molecule) (quantum_live_timestamp_seconds)",
            "age s {{host}}:{{pid}}",
            "C",
        ),
    ],
    {"h": 8, "w": 12, "x": 12, "y": y},
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
y += 8
row("GPU", y)
y += 1
panel(
    "stat",
    "Runs per device",
    "Runs currently held by the PushGateway, by device actually used (CPU/GPU).",
    [target(f"count by (device) (quantum_vqe_minimum_energy{{{SEL}}})", "{{device}}", "A", instant=True)],
    {"h": 8, "w": 6, "x": 0, "y": y},
    unit="short",
)
panel(
    "timeseries",
    "GPU utilisation (%)",
    "Mean NVIDIA GPU utilisation during GPU runs (NVML). Empty on CPU-only hosts.",
    [target(f"avg by (molecule) (quantum_gpu_utilization_percent{{{SEL}}})", "{{molecule}}", "A")],
    {"h": 8, "w": 9, "x": 6, "y": y},
    unit="percent",
)
panel(
    "timeseries",
    "GPU memory used",
    "Peak NVIDIA GPU memory used during GPU runs (NVML). Empty on CPU-only hosts.",
    [target(f"max by (molecule) (quantum_gpu_memory_used_bytes{{{SEL}}})", "{{molecule}}", "A")],
    {"h": 8, "w": 9, "x": 15, "y": y},
    unit="bytes",
)
y += 8
row("Pipeline health", y)
y += 1
panel(
    "timeseries",
    "Kafka consumer lag (messages)",
    "Messages not yet consumed, per consumer group and topic (e.g. the Connect S3 sink).",
    [
        target(
            "sum by (consumer_group, topic) (quantum_pipeline_kafka_lag)", "{{consumer_group}} {{topic}}", "A"
        )
    ],
    {"h": 8, "w": 8, "x": 0, "y": y},
    unit="short",
    thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1000}],
)
panel(
    "barchart",
    "Landed files per day",
    "Raw Avro files Kafka Connect wrote to object storage per UTC day.",
    [target("max by (day) (quantum_pipeline_landed_files)", "{{day}}", "A", instant=True, fmt="table")],
    {"h": 8, "w": 8, "x": 8, "y": y},
    unit="short",
    extra={"options": {"xField": "day", "orientation": "vertical", "showValue": "auto"}},
)
panel(
    "table",
    "Feature rows per day",
    "Rows per Iceberg feature table and UTC day (quantum_features namespace).",
    [target("max by (day, table) (quantum_pipeline_feature_rows)", "", "A", instant=True, fmt="table")],
    {"h": 8, "w": 8, "x": 16, "y": y},
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
y += 8
panel(
    "stat",
    "Scrape targets up",
    "1 = Prometheus scrapes the target (PushGateway, Prometheus, schema registry).",
    [target("max by (job) (up)", "{{job}}", "A", instant=True)],
    {"h": 4, "w": 8, "x": 0, "y": y},
    unit="short",
    thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}],
)
panel(
    "stat",
    "Since last pipeline health push",
    "Seconds since quantum_pipeline_health_timestamp_seconds per component.",
    [
        target(
            "time() - max by (component) (quantum_pipeline_health_timestamp_seconds)",
            "{{component}}",
            "A",
            instant=True,
        )
    ],
    {"h": 4, "w": 8, "x": 8, "y": y},
    unit="s",
    thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 7200}],
)
panel(
    "stat",
    "Runs in the last 24 h",
    "VQE runs that finished in the last 24 hours (still held by the PushGateway).",
    [
        target(
            f"count((time() - quantum_vqe_run_timestamp_seconds{{{SEL}}}) < 86400) or vector(0)",
            "runs",
            "A",
            instant=True,
        )
    ],
    {"h": 4, "w": 8, "x": 16, "y": y},
    unit="short",
)


def var(name, label, metric):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": f"label_values({metric}, {name})", "refId": f"var-{name}"},
        "definition": f"label_values({metric}, {name})",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


dash = {
    "uid": "quantum-pipeline",
    "title": "Quantum Pipeline: VQE runs and pipeline health",
    "description": "VQE energies vs exact references, convergence cost, resources, GPU and pipeline health. Metrics from qp_assets.monitoring (PushGateway job=quantum_pipeline / quantum_pipeline_health).",
    "tags": ["quantum", "vqe", "pipeline"],
    "timezone": "utc",
    "editable": False,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-24h", "to": "now"},
    "templating": {
        "list": [
            var("molecule", "Molecule", "quantum_vqe_minimum_energy"),
            var("basis_set", "Basis set", "quantum_vqe_minimum_energy"),
            var("device", "Device", "quantum_vqe_minimum_energy"),
        ]
    },
    "annotations": {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }
        ]
    },
    "links": [],
    "panels": panels,
}
OUT.write_text(json.dumps(dash, indent=2) + "\n")
print(f"{OUT}: {len(panels)} panels")
