"""Unit tests of qp_assets.monitoring: monitor thread, metric building, outage handling, plots, dashboards."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time

import fastavro
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qp_assets.monitoring import dashboards, metrics, plots
from qp_assets.monitoring.cli import parse_duration_s
from qp_assets.monitoring.monitor import SNAPSHOT_FIELDS, PerformanceMonitor, summarize_snapshots
from qp_assets.vqe.result import SCHEMA_PATH
from tests.monitoring_helpers import vqe_record

LABELS = {"molecule": "H2", "basis_set": "sto3g", "backend": "statevector", "device": "CPU",
          "optimizer": "L-BFGS-B", "ansatz": "uccsd", "experiment_id": "test-experiment"}  # fmt: skip


def _samples(registry) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture(autouse=True)
def _reset_outage_flag():
    metrics._outage_logged = False
    yield
    metrics._outage_logged = False


# ----------------------------------------------------------------------------------------------- monitor
def test_monitor_snapshots_match_avsc_record_and_stop_is_idempotent() -> None:
    parsed = fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
    schema = parsed["__named_schemas"]["qp.vqe.PerformanceSnapshot"]
    t0 = int(time.time() * 1000)
    with PerformanceMonitor(interval_s=0.05) as mon:
        assert mon.running
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:  # busy main thread: the sampler must still tick
            sum(i * i for i in range(2000))
    snaps = mon.snapshots()
    assert not mon.running
    assert 2 <= len(snaps) <= 12, len(snaps)
    for snap in snaps:
        assert tuple(snap) == SNAPSHOT_FIELDS
        assert fastavro.validation.validate(snap, schema, raise_errors=True)
        assert t0 - 5 <= snap["timestamp"] <= int(time.time() * 1000)
        assert 0.0 <= snap["cpu_percent"] <= 100.0 and 0.0 < snap["memory_percent"] < 100.0
        assert snap["process_rss_bytes"] > 10_000_000  # this interpreter holds far more than 10 MB
        assert snap["gpu_utilization_percent"] is None or 0 <= snap["gpu_utilization_percent"] <= 100
    assert [s["timestamp"] for s in snaps] == sorted(s["timestamp"] for s in snaps)
    assert max(s["cpu_percent"] for s in snaps[1:]) > 0.0  # the busy loop shows up
    assert mon.stop() == snaps  # second stop: no new sample, same data


def test_monitor_short_run_still_has_a_snapshot_and_rejects_bad_interval() -> None:
    mon = PerformanceMonitor(interval_s=10.0).start()
    snaps = mon.stop()
    assert len(snaps) == 1
    with pytest.raises(ValueError, match="interval_s"):
        PerformanceMonitor(interval_s=0)


def test_summarize_snapshots_mean_cpu_peak_memory() -> None:
    snaps = vqe_record()["performance_snapshots"]
    summary = summarize_snapshots(snaps)
    assert summary["cpu_percent_mean"] == 50.0 and summary["cpu_percent_max"] == 60.0
    assert summary["memory_percent_max"] == 35.0 and summary["process_rss_bytes_max"] == 250_000_000
    assert summary["gpu_utilization_percent_mean"] is None and summary["gpu_memory_used_bytes_max"] is None


# ----------------------------------------------------------------------------------------------- metrics
def test_registry_values_labels_and_iteration_histogram() -> None:
    rec = vqe_record(energies=(-1.10, -1.13, -1.1372, -1.13727))
    samples = _samples(metrics.build_registry(rec))

    def value(name: str) -> float:
        (sample,) = samples[name]
        assert sample.labels == LABELS, (name, sample.labels)
        return sample.value

    assert value("quantum_vqe_minimum_energy") == rec["total_energy"]
    assert value("quantum_vqe_exact_energy") == rec["reference_energies"]["exact"]
    assert value("quantum_vqe_error_mha") == pytest.approx((-1.13727 + 1.137270174660903) * 1000)
    assert value("quantum_vqe_iterations_count") == 4
    assert value("quantum_vqe_function_evaluations") == 8
    assert value("quantum_vqe_total_time") == 1.5
    assert value("quantum_vqe_time_per_iteration") == pytest.approx(0.16 / 4)
    assert value("quantum_system_cpu_percent") == 50.0
    assert value("quantum_system_memory_percent") == 35.0
    assert value("quantum_process_rss_bytes") == 250_000_000
    assert value("quantum_vqe_run_timestamp_seconds") == rec["event_time"] / 1000
    assert value("quantum_vqe_iteration_seconds_count") == 3  # 4 iterations -> 3 intervals of 20 ms
    assert value("quantum_vqe_iteration_seconds_sum") == pytest.approx(0.06)
    buckets = {s.labels["le"]: s.value for s in samples["quantum_vqe_iteration_seconds_bucket"]}
    assert buckets["0.01"] == 0 and buckets["0.025"] == 3
    assert "quantum_gpu_utilization_percent" not in samples  # no GPU sampled -> no GPU series
    exported = dashboards.exported_metric_names()
    assert set(samples) <= exported


def test_registry_gpu_metrics_and_missing_exact() -> None:
    snaps = [{"timestamp": 1, "cpu_percent": 10.0, "memory_percent": 20.0, "process_rss_bytes": 5,
              "gpu_utilization_percent": 80.0, "gpu_memory_used_bytes": 2**30}]  # fmt: skip
    samples = _samples(metrics.build_registry(vqe_record(exact=None), snapshots=snaps))
    assert samples["quantum_gpu_utilization_percent"][0].value == 80.0
    assert samples["quantum_gpu_memory_used_bytes"][0].value == 2**30
    assert "quantum_vqe_exact_energy" not in samples and "quantum_vqe_error_mha" not in samples


def test_gateway_url_forms_and_bad_input() -> None:
    class S:
        pushgateway_url = "127.0.0.1:9091"

    assert metrics.gateway_url("127.0.0.1:9091") == "http://127.0.0.1:9091"
    assert metrics.gateway_url("https://pg.example:443/") == "https://pg.example:443"
    assert metrics.gateway_url(S()) == "http://127.0.0.1:9091"
    with pytest.raises(ValueError, match="pushgateway_url"):
        metrics.gateway_url("")
    with pytest.raises(TypeError, match="VQEResult"):
        metrics.push_vqe_metrics(42, "127.0.0.1:9")


def test_group_path_base64_for_slashes() -> None:
    assert (
        metrics._group_path("quantum_pipeline", {"run_id": "abc-1"})
        == "/metrics/job/quantum_pipeline/run_id/abc-1"
    )
    assert metrics._group_path("j", {"k": "a/b"}) == "/metrics/job/j/k@base64/YS9i"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_to_closed_port_returns_false_fast_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    url = f"127.0.0.1:{_closed_port()}"
    caplog.set_level(logging.DEBUG, logger="qp_assets.monitoring.metrics")
    t0 = time.monotonic()
    assert metrics.push_vqe_metrics(vqe_record(), url, timeout_s=1.0) is False
    assert metrics.push_vqe_metrics(vqe_record(), url, timeout_s=1.0) is False
    assert time.monotonic() - t0 < 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()


def test_push_to_silent_server_is_bounded_by_timeout() -> None:
    """A socket that accepts and never answers: the push gives up after timeout_s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        ok = metrics.push_vqe_metrics(vqe_record(), f"127.0.0.1:{server.getsockname()[1]}", timeout_s=0.5)
        elapsed = time.monotonic() - t0
        assert ok is False
        assert 0.45 <= elapsed < 1.0, elapsed
        assert accepted, "the push did connect"
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        server.close()


# ----------------------------------------------------------------------------------------------- plots
def test_convergence_plot_png_svg_and_errors(tmp_path) -> None:
    rec = vqe_record()
    png = plots.convergence_plot_png_bytes(rec)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    fig = plots.convergence_figure(rec)
    ax = fig.axes[0]
    assert list(ax.lines[0].get_ydata()) == [it["energy"] for it in rec["iterations"]]
    assert any(list(line.get_ydata()) == [rec["reference_energies"]["exact"]] * 2 for line in ax.lines)
    assert any("error vs exact" in t.get_text() for t in ax.texts)
    out = plots.save_convergence_plot(rec, tmp_path / "sub" / "plot.svg")
    assert out.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="suffix"):
        plots.save_convergence_plot(rec, tmp_path / "plot.gif")
    empty = dict(rec, iterations=[])
    with pytest.raises(ValueError, match="iterations"):
        plots.convergence_figure(empty)


# ----------------------------------------------------------------------------------------------- dashboards/rules
@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'min by (molecule) (quantum_vqe_minimum_energy{molecule=~"$molecule"})',
            {"quantum_vqe_minimum_energy"},
        ),
        ("histogram_quantile(0.95, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
        ("abs(x) > 1.6 and on (run_id) (time() - y) < 3600", {"x", "y"}),
        ("label_values(quantum_vqe_minimum_energy, basis_set)", {"quantum_vqe_minimum_energy"}),
        ('up{job="pushgateway"} == 0', {"up"}),
        ("count(m offset 5m) or vector(0)", {"m"}),
    ],
)
def test_metric_names_from_promql(expr: str, names: set[str]) -> None:
    assert dashboards.metric_names(expr) == names


def test_dashboard_and_rules_reference_only_exported_metrics() -> None:
    refs = dashboards.referenced_metrics()
    assert {"quantum_vqe_minimum_energy", "quantum_vqe_error_mha", "quantum_vqe_iteration_seconds_bucket",
            "quantum_system_cpu_percent", "quantum_gpu_utilization_percent", "quantum_pipeline_kafka_lag",
            "quantum_pipeline_landed_files", "quantum_pipeline_feature_rows"} <= set(refs)  # fmt: skip
    unknown = set(refs) - dashboards.exported_metric_names()
    assert not unknown, {n: refs[n] for n in unknown}


def test_dashboard_structure_and_provisioning_consistent() -> None:
    import yaml

    dash = json.loads((dashboards.DASHBOARD_DIR / "quantum_pipeline.json").read_text())
    ids = [p["id"] for p in dashboards._walk_panels(dash["panels"])]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert {"VQE energy and accuracy", "GPU", "Pipeline health", "System resources during runs"} <= titles
    ds = yaml.safe_load((dashboards.INFRA / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    for panel in dashboards._walk_panels(dash["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid
    alerts = yaml.safe_load((dashboards.GRAFANA_ALERTING_DIR / "quantum_pipeline_alerts.yaml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            refs = {d["refId"] for d in rule["data"]}
            assert rule["condition"] in refs
            assert {d["datasourceUid"] for d in rule["data"]} <= {uid, "__expr__"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_config_and_rules() -> None:
    proc = subprocess.run(
        ["promtool", "check", "config", str(dashboards.INFRA / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rules found" in proc.stdout


def test_parse_duration() -> None:
    assert (
        parse_duration_s("90") == 90 and parse_duration_s("15m") == 900 and parse_duration_s("7d") == 604800
    )
    with pytest.raises(ValueError, match="older-than"):
        parse_duration_s("soon")


def test_pipeline_metrics_outage_and_bad_day() -> None:
    from qp_assets.monitoring import pipeline_metrics

    url = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    assert (
        pipeline_metrics.push_pipeline_metrics(url, kafka_lag=3, landed_files=1, feature_rows={"t": 1})
        is False
    )
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(ValueError, match="day"):
        pipeline_metrics.push_pipeline_metrics(url, landed_files=1, day="yesterday")


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from qp_assets.monitoring.cli import main

    assert main(["check-dashboards", "--static"]) == 0
    assert "0 not exported" in capsys.readouterr().out
    assert main(["cleanup", "--older-than", "soon"]) == 2
    assert main(["push-pipeline", "--days", "0"]) == 2


def test_live_push_outage_never_reaches_the_run() -> None:
    url = f"127.0.0.1:{_closed_port()}"
    mon = PerformanceMonitor(interval_s=0.05, push_url=url, push_every_s=0.05, live_labels={"molecule": "H2"})
    mon.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    mon.stop()
    assert time.monotonic() - t0 < 0.5
    assert len(mon.snapshots()) >= 3
    assert mon._live is not None and mon._live.pushed is False
    with pytest.raises(ValueError, match="live_labels"):
        PerformanceMonitor(push_url=url, live_labels={"pid": "1"})
