"""Cluster mode, selected only by configuration, from the same Definitions.

VQE runner job: `dagster job execute -j vqe_runner_job` (CLI, persistent DAGSTER_HOME) on two H2
requests of a private request topic; the event log must show every `run_vqe_request` step in its own
OS process (multiprocess executor), different from the run's coordinator process, and two results.
(The feature job on a Spark standalone cluster is covered in tests/test_export_airflow_e2e.py, where the
Dagster reference run goes to `SPARK_MASTER=spark://...`.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent


def test_vqe_runner_ops_run_in_separate_processes(stack, tmp_path: Path) -> None:
    from dagster import DagsterEventType, DagsterInstance

    from qp_assets.e2e import molecule_requests
    from qp_assets.streaming.publisher import ensure_topic, publish_request

    topic = f"test.deploy.requests.{uuid.uuid4().hex[:8]}"
    ensure_topic(stack, topic, 1)
    requests = molecule_requests(("H2",)) + molecule_requests(("H2",), seed=11)
    outcomes = [publish_request(r, stack, topic=topic) for r in requests]
    assert all(o.published and o.partition == 0 for o in outcomes), outcomes
    offsets = sorted(o.offset for o in outcomes)
    run_config = {
        "ops": {
            "load_request_batch": {
                "config": {
                    "topic": topic,
                    "partition": 0,
                    "start_offset": offsets[0],
                    "end_offset": offsets[-1] + 1,
                }
            }
        }
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_config))
    home = tmp_path / "dagster_home"
    home.mkdir()
    # two slots select the multiprocess executor (one process per op, as on GPU hosts); with the CPU-only
    # default of one slot the ops run in the run's process (tests/test_orchestration_units.py)
    env = {**os.environ, "DAGSTER_HOME": str(home), "QP_VQE_CPU_SLOTS": "2"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-m",
            "qp_assets.definitions",
            "-j",
            "vqe_runner_job",
            "-c",
            str(tmp_path / "run.yaml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].job_name == "vqe_runner_job"
        records = instance.all_logs(runs[0].run_id)
    run_pid = next(
        r.dagster_event.pid
        for r in records
        if r.dagster_event and r.dagster_event.event_type == DagsterEventType.RUN_START
    )
    step_pids = {
        r.step_key: r.dagster_event.pid
        for r in records
        if r.dagster_event
        and r.dagster_event.event_type == DagsterEventType.STEP_START
        and r.step_key.startswith("run_vqe_request")
    }
    assert len(step_pids) == 2, step_pids
    assert run_pid not in step_pids.values()
    assert len(set(step_pids.values())) == 2, step_pids  # one process per runner op
    outputs = [
        r.dagster_event.event_specific_data.metadata
        for r in records
        if r.dagster_event
        and r.dagster_event.event_type == DagsterEventType.STEP_OUTPUT
        and r.step_key.startswith("run_vqe_request")
    ]
    assert len(outputs) == 2
    for metadata in outputs:
        # H2/STO-3G: FCI -1.13727017 Ha; VQE within chemical accuracy and above the exact energy
        assert metadata["exact_energy_ha"].value == pytest.approx(-1.13727017, abs=1e-6)
        assert -1e-6 <= metadata["error_vs_exact_mha"].value < 1.6
