"""Generated DAGs load in a real Airflow 3 (separate venv under .qp/airflow-venv, created once and cached)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from airflow_db import migrated_airflow_db

from qp_assets.export.airflow_dags import AirflowExportOptions, export_airflow
from qp_assets.export.airflow_env import AirflowEnvError, airflow_env, ensure_airflow_venv
from qp_assets.export.graph import exported_assets
from qp_assets.settings import runtime_dir

PROBE = Path(__file__).resolve().parent.parent / "qp_assets" / "export" / "dagbag_probe.py"
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    try:
        return ensure_airflow_venv()
    except AirflowEnvError as exc:
        pytest.fail(str(exc), pytrace=False)


def load_dagbag(airflow_python: Path, dags_dir: Path, home: Path) -> dict:
    """DagBag description (see dagbag_probe.py) from the Airflow venv; 120 s bound."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(airflow_python), "-P", str(PROBE), str(dags_dir)],
        env=airflow_env(home, dags_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("QP_DAGBAG_JSON "))
    return json.loads(line.split(" ", 1)[1])


def _defs() -> dg.Definitions:
    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=[dg.AssetKey("raw_vqe_results")])
    def molecules(): ...

    @dg.asset(partitions_def=DAILY, group_name="quantum_features", key_prefix=["quantum_features"])
    def vqe_results(): ...

    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=[molecules, vqe_results])
    def vqe_iterations(): ...

    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=[molecules, vqe_iterations])
    def processing_metadata(): ...

    job = dg.define_asset_job(
        "feature_processing_job", selection=dg.AssetSelection.groups("quantum_features")
    )
    return dg.Definitions(
        assets=[dg.AssetSpec("raw_vqe_results"), molecules, vqe_results, vqe_iterations, processing_metadata],
        jobs=[job],
    )


def _expected_edges(defs: dg.Definitions, **selection) -> dict[str, list[str]]:
    return {a.task_id: sorted(a.upstream) for a in exported_assets(defs, **selection)}


@pytest.mark.slow
def test_generated_dags_load_in_airflow(airflow_python: Path, tmp_path: Path) -> None:
    defs = _defs()
    options = AirflowExportOptions(email=("chem@example.org",), retries=3, retry_delay_minutes=20)
    export_airflow(defs, tmp_path / "dags", options)
    bag = load_dagbag(airflow_python, tmp_path / "dags", runtime_dir() / "airflow-test-home")
    assert bag["import_errors"] == {}
    assert bag["warnings"] == []  # no deprecated (Airflow-2-only) features
    assert sorted(bag["dags"]) == ["quantum_feature_processing", "vqe_batch_generation"]

    feature = bag["dags"]["quantum_feature_processing"]
    got = {task_id: task["upstream"] for task_id, task in feature["tasks"].items()}
    assert got == _expected_edges(defs)
    assert got["processing_metadata"] == ["molecules", "vqe_iterations"]
    assert feature["timetable"] == "CronDataIntervalTimetable" and feature["timetable_summary"] == "0 0 * * *"
    assert feature["timetable_timezone"] in ("UTC", "Timezone('UTC')") and feature["catchup"] is False
    assert feature["start_date"] == "2026-01-01T00:00:00+00:00"
    assert feature["default_args"]["retries"] == 3
    assert feature["default_args"]["retry_delay_s"] == 1200.0
    assert feature["default_args"]["on_failure_callback"][0]["to"] == ["chem@example.org"]
    vqe_results = feature["tasks"]["quantum_features__vqe_results"]
    # a Python task running an argv list: nothing of it is a shell string or a template
    assert vqe_results["operator"].endswith("._PythonDecoratedOperator"), vqe_results["operator"]
    assert vqe_results["python_callable"] == "materialize" and vqe_results["bash_command"] is None
    assert vqe_results["op_args"] == [] and vqe_results["op_kwargs"] == {}
    assert vqe_results["retries"] == 3 and vqe_results["retry_delay_s"] == 1200.0
    # success mail once per run: on the sink task only
    assert [t for t, v in feature["tasks"].items() if v["on_success_callback"]] == ["processing_metadata"]
    assert feature["tasks"]["processing_metadata"]["on_success_callback"][0]["to"] == ["chem@example.org"]

    batch = bag["dags"]["vqe_batch_generation"]
    assert list(batch["tasks"]) == ["submit_vqe_requests"]
    submit = batch["tasks"]["submit_vqe_requests"]
    assert submit["python_callable"] == "submit_vqe_requests" and submit["bash_command"] is None
    assert submit["op_args"] == [] and submit["op_kwargs"] == {} and submit["retries"] == 0
    assert batch["schedule"] is None and batch["params"]["molecules_file"].endswith(".json")
    assert batch["params"]["repeat"] == 1


@pytest.mark.slow
def test_real_definitions_export_loads_in_airflow(airflow_python: Path, tmp_path: Path) -> None:
    """The project's own Definitions: one task per feature asset of feature_processing_job, same edges."""
    definitions = pytest.importorskip("qp_assets.definitions")
    defs = definitions.defs
    export_airflow(defs, tmp_path / "dags", AirflowExportOptions())
    bag = load_dagbag(airflow_python, tmp_path / "dags", runtime_dir() / "airflow-test-home")
    assert bag["import_errors"] == {}
    got = {t: v["upstream"] for t, v in bag["dags"]["quantum_feature_processing"]["tasks"].items()}
    assert got == _expected_edges(defs)
    assert len(got) >= 10  # the ten Iceberg feature tables
    # independent of the exporter: every asset-graph edge between feature assets is an Airflow edge
    from qp_assets.export.graph import task_id_for

    graph = defs.resolve_asset_graph()
    job_keys = set(defs.resolve_job_def("feature_processing_job").asset_layer.selected_asset_keys)
    assert {task_id_for(k) for k in job_keys} == set(got)
    for key in job_keys:
        for parent in graph.get(key).parent_keys & job_keys:
            assert task_id_for(parent) in got[task_id_for(key)], (parent, key)
    sink = [t for t, ups in got.items() if len(ups) == len(got) - 1]
    assert sink == ["quantum_features__processing_metadata"]
    # the iteration/result consistency check reads vqe_results: that asset runs first
    assert "quantum_features__vqe_results" in got["quantum_features__vqe_iterations"]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf8", "replace")))
        return "250 OK"


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_dags_test_mails_on_success_and_failure(airflow_python: Path, tmp_path: Path, outcome: str) -> None:
    """`airflow dags test` of the exported DAG with a stand-in for the dagster executable (`true`/`false`):
    the task order runs through and exactly one success mail (sink task) reaches the configured address,
    or failure mails naming the failed root task (retries 0) and no success mail."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        stand_in = "/bin/true" if outcome == "success" else "/bin/false"
        options = AirflowExportOptions(email=("ops@example.org",), retries=0, dagster_bin=stand_in)
        export_airflow(_defs(), tmp_path / "dags", options)
        home = tmp_path / "airflow_home"
        home.mkdir()
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True},
        }
        env = airflow_env(
            home,
            tmp_path / "dags",
            {"AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(conn), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"},
        )
        airflow = str(airflow_python.parent / "airflow")
        migrated_airflow_db(airflow_python, env)
        run = subprocess.run(
            [airflow, "dags", "test", "quantum_feature_processing", "2026-01-14"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = run.stdout + run.stderr
        for _ in range(40):
            if inbox.messages:
                break
            time.sleep(0.25)
    finally:
        controller.stop()
    if outcome == "success":
        assert run.returncode == 0, output[-3000:]
        ends = [
            line.split("task_id=")[1].split()[0]
            for line in output.splitlines()
            if "[DAG TEST] end task" in line
        ]
        assert ends[-1] == "processing_metadata" and set(ends) == set(_expected_edges(_defs()))
        assert len(inbox.messages) == 1, [m[1][:300] for m in inbox.messages]
        assert "quantum_feature_processing 2026-01-14 succeeded" in inbox.messages[0][1]
    else:
        import email
        from email.header import decode_header, make_header

        assert run.returncode != 0
        # one failure mail per failed task: the root tasks fail, their downstream tasks never start
        roots = sorted(t for t, ups in _expected_edges(_defs()).items() if not ups)
        subjects = sorted(
            str(make_header(decode_header(email.message_from_string(m[1])["Subject"])))
            for m in inbox.messages
        )
        # (`airflow dags test` stops at the first failed task and may invoke its callback twice)
        assert subjects and set(subjects) <= {f"[quantum-pipeline] task {t} failed" for t in roots}, subjects
    assert all(m[0] == ["ops@example.org"] for m in inbox.messages)
