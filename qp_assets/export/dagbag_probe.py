"""Run with the *Airflow* venv's python: load a DAG folder with Airflow's DagBag and print JSON.

Usage: ``<airflow-venv>/bin/python dagbag_probe.py DAGS_DIR``. Imports nothing from qp_assets (the
Airflow venv does not have it). Output: ``{"import_errors": {...}, "warnings": [...], "dags": {dag_id:
{schedule, catchup, start_date, max_active_runs, params, default_args, tasks: {task_id: {...}}}}}``.
"""

from __future__ import annotations

import json
import sys
import warnings


def _notifier(callbacks) -> list[dict]:
    out = []
    for cb in callbacks or []:
        out.append(
            {
                "type": type(cb).__name__,
                "to": getattr(cb, "to", None),
                "smtp_conn_id": getattr(cb, "smtp_conn_id", None),
                "subject": getattr(cb, "subject", None),
            }
        )
    return out


def describe(dags_dir: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=dags_dir)
    result: dict = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "warnings": sorted(
            {
                f"{w.category.__name__}: {w.message}"
                for w in caught
                if "Deprecat" in w.category.__name__ or "Removed" in w.category.__name__
            }
        ),
        "dags": {},
    }
    for dag_id, dag in sorted(bag.dags.items()):
        default_args = dict(dag.default_args or {})
        tasks = {}
        for task in dag.tasks:
            tasks[task.task_id] = {
                "operator": f"{type(task).__module__}.{type(task).__name__}",
                "upstream": sorted(task.upstream_task_ids),
                "retries": task.retries,
                "retry_delay_s": task.retry_delay.total_seconds(),
                "bash_command": getattr(task, "bash_command", None),
                "python_callable": getattr(getattr(task, "python_callable", None), "__name__", None),
                "template_fields": list(getattr(task, "template_fields", ())),
                "op_args": list(getattr(task, "op_args", None) or []),
                "op_kwargs": dict(getattr(task, "op_kwargs", None) or {}),
                "cwd": getattr(task, "cwd", None),
                "on_failure_callback": _notifier(task.on_failure_callback),
                "on_success_callback": _notifier(task.on_success_callback),
            }
        result["dags"][dag_id] = {
            "schedule": str(getattr(dag, "schedule", None))
            if getattr(dag, "schedule", None) is not None
            else None,
            "timetable": type(dag.timetable).__name__,
            "timetable_summary": getattr(dag.timetable, "summary", None)
            or getattr(dag.timetable, "expression", None),
            "timetable_timezone": str(getattr(dag.timetable, "timezone", "")),
            "catchup": dag.catchup,
            "start_date": dag.start_date.isoformat() if dag.start_date else None,
            "max_active_runs": dag.max_active_runs,
            "params": {k: dag.params[k] for k in dag.params},
            "default_args": {
                "retries": default_args.get("retries"),
                "retry_delay_s": default_args["retry_delay"].total_seconds()
                if "retry_delay" in default_args
                else None,
                "on_failure_callback": _notifier(
                    default_args.get("on_failure_callback")
                    if isinstance(default_args.get("on_failure_callback"), list)
                    else [default_args.get("on_failure_callback")]
                    if default_args.get("on_failure_callback")
                    else []
                ),
            },
            "tasks": tasks,
        }
    return result


if __name__ == "__main__":
    print("QP_DAGBAG_JSON " + json.dumps(describe(sys.argv[1]), default=str))
