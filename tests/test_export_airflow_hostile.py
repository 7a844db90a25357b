"""Injection-proof export (issue 15, item 6): hostile values in every export option and DAG param, run by a
real Airflow 3 (`airflow dags test`, separate venv under .qp/airflow-venv).

Every free-text export option (executables, module, project dir, DAGSTER_HOME, molecules file, submit args,
addresses, SMTP connection id) and the batch DAG's ``molecules_file`` param carry shell metacharacters,
quotes, newlines, Jinja and the issue's Python payload, each of which would ``touch`` a marker file if it
were ever executed by a shell, by Python or by Jinja. The "executables" are a recorder script whose file
name is itself hostile; it writes its argv, working directory and DAGSTER_HOME as JSON. The test proves
that no marker exists and that each hostile value arrived verbatim as exactly one argument.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from airflow_db import migrated_airflow_db

from qp_assets.export.airflow_dags import (
    AirflowExportOptions,
    export_airflow,
    materialize_argv,
    split_submit_args,
    submit_argv,
)
from qp_assets.export.airflow_env import AirflowEnvError, airflow_env, ensure_airflow_venv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["QP_ARGV_LOG"], "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "dagster_home": os.environ.get("DAGSTER_HOME")}}) + "\\n")
"""


def _defs() -> dg.Definitions:
    @dg.asset(partitions_def=DAILY, group_name="quantum_features")
    def molecules(): ...

    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=[molecules])
    def processing_metadata(): ...

    job = dg.define_asset_job(
        "feature_processing_job", selection=dg.AssetSelection.groups("quantum_features")
    )
    return dg.Definitions(assets=[molecules, processing_metadata], jobs=[job])


def payloads(marker: Path) -> dict[str, str]:
    """Values that create ``marker`` if anything ever evaluates them (shell, Python source, Jinja)."""
    m = str(marker)
    return {
        "python": f'"+__import__("os").popen("touch {m}").read()+"',
        "python_single": f"'+__import__('os').system('touch {m}')+'",
        "subshell": f"$(touch {m})",
        "backticks": f"`touch {m}`",
        "semicolon": f"x; touch {m}; #",
        "newline": f"x\ntouch {m}\n",
        "quotes": f'"\'\\"; touch {m} #',
        "jinja": "{{ 7 * 7 }}{% for x in [1] %}{{ x }}{% endfor %}",
        "dash": "--help",
    }


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    try:
        return ensure_airflow_venv()
    except AirflowEnvError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_hostile_values_never_execute_and_arrive_verbatim(airflow_python: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = payloads(marker)
    everything = " ".join(bad.values())
    # executables and directories whose names are themselves hostile (a file name cannot hold "/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / (
        "rec" + bad["subshell"].replace("/", "_") + bad["semicolon"].replace("/", "_") + "'\"`"
    )
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    project_dir = tmp_path / ("proj " + bad["backticks"].replace("/", "_") + "\n'\"")
    project_dir.mkdir()
    dagster_home = str(tmp_path / ("home $(id) " + bad["quotes"].replace("/", "_")))
    address = 'x"+__import__("os").popen("id").read()+"$(id)`id`;@example.org'
    submit_extra = [bad["python"], "--seed", bad["newline"], bad["jinja"]]
    options = AirflowExportOptions(
        email=(address,),
        email_from=address,
        smtp_conn_id=bad["python"],
        retries=0,
        module=bad["python_single"] + everything,
        dagster_bin=str(recorder),
        qp_bin=str(recorder),
        project_dir=str(project_dir),
        dagster_home=dagster_home,
        molecules_file=bad["semicolon"],
        submit_args=shlex.join(submit_extra),
    )
    dags = tmp_path / "dags"
    export_airflow(_defs(), dags, options)
    assert split_submit_args(options.submit_args) == submit_extra

    home = tmp_path / "airflow_home"
    home.mkdir()
    log = tmp_path / "argv.jsonl"
    env = airflow_env(home, dags, {"QP_ARGV_LOG": str(log), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"})
    airflow = str(airflow_python.parent / "airflow")
    migrated_airflow_db(airflow_python, env)

    molecules_param = everything  # the triggering user's value: every payload at once
    runs = {
        "quantum_feature_processing": [],
        "vqe_batch_generation": ["-c", json.dumps({"molecules_file": molecules_param, "repeat": 2})],
    }
    for dag_id, extra in runs.items():
        run = subprocess.run(
            [airflow, "dags", "test", *extra, dag_id, "2026-01-14"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, (dag_id, (run.stdout + run.stderr)[-4000:])

    assert not marker.exists(), "a hostile value was executed"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3, calls  # two feature tasks + one submit task
    features = sorted((c for c in calls if c["argv"][1] == "asset"), key=lambda c: c["argv"][4])
    assert [c["argv"] for c in features] == [
        materialize_argv(str(recorder), options.module, key, "2026-01-14", features[0]["argv"][-1][14:])
        for key in ("molecules", "processing_metadata")
    ]
    assert features[0]["argv"][-1].startswith("--config-json=")
    for call in features:
        assert call["cwd"] == str(project_dir) and call["dagster_home"] == dagster_home
        assert Path(dagster_home).is_dir()  # created verbatim, hostile name and all
    (submit,) = (c for c in calls if c["argv"][1] == "request")
    prefix = next(a for a in submit["argv"] if a.startswith("--request-id-prefix="))
    ts = prefix[len("--request-id-prefix=airflow-") : -1]
    assert submit["argv"] == submit_argv(str(recorder), molecules_param, 2, ts, submit_extra)
    assert submit["argv"][4] == "--molecules-file=" + molecules_param  # one argument, verbatim (Jinja too)
    assert submit["cwd"] == str(project_dir)
