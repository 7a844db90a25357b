"""Campaign throughput under a real ``dagster-daemon``: a campaign file submitted with ``qp campaign submit``
on a fresh, isolated stack, until every request is a row in Iceberg (or a DLQ entry), then ``qp campaign
status`` (``qp audit`` over the campaign's requests) must be green.

Prints runs per minute end to end (submit -> last row queryable) beside the rate at which results reached
Kafka (submit -> last result acknowledged), the wall time, the share of each stage of the wall time, and the
audit's counts.

Stages (seconds from submit, shares of the end-to-end wall time):

* submit: expanding, checking and publishing every request;
* first run: the request sensor's first ``vqe_runner_job`` run created;
* kafka: the last result acknowledged by Kafka (``kafka_acked_at`` of the ``run_vqe_request`` steps);
* iceberg: the last request's row queryable in ``vqe_results``.

Run-time split: the sum of ``run_vqe_request`` step durations (simulation, publish, metrics, plot), of the
runner runs' wall times and of the feature runs' wall times. Result reuse: how many of the campaign's rows
reused an earlier result (``reused_from`` set) and how many were computed; ``--resubmit`` then submits the
same campaign again (same seeds, a new campaign id) on the same stack and prints its figures too.

    .venv/bin/python benchmarks/campaign.py [--file campaigns/small-molecules-500.yaml] [--limit N] [--resubmit]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon_stack import ROOT, fresh_daemon_stack


def _epoch(value) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _runner_figures(instance, prefix: str, since: float) -> dict[str, float]:
    """Last Kafka ack, step and run durations of the runner and feature runs created from ``since`` on
    (epoch s / seconds)."""
    from dagster import DagsterEventType, RunsFilter

    last_ack, step_s, steps, runner_s, first_created = 0.0, 0.0, 0, 0.0, float("inf")
    for record in instance.get_run_records(RunsFilter(job_name="vqe_runner_job")):
        if _epoch(record.create_timestamp) < since:
            continue
        first_created = min(first_created, _epoch(record.create_timestamp))
        if record.start_time and record.end_time:
            runner_s += record.end_time - record.start_time
        starts: dict[str, float] = {}
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None or not (entry.step_key or "").startswith("run_vqe_request"):
                continue
            if event.event_type == DagsterEventType.STEP_START:
                starts[entry.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS and entry.step_key in starts:
                step_s += entry.timestamp - starts[entry.step_key]
                steps += 1
            elif event.event_type == DagsterEventType.STEP_OUTPUT:
                meta = event.event_specific_data.metadata or {}
                rid, acked = meta.get("request_id"), meta.get("kafka_acked_at")
                if rid is not None and str(rid.value).startswith(prefix) and acked is not None:
                    last_ack = max(last_ack, float(acked.value))
    feature_s = sum(
        r.end_time - r.start_time
        for r in instance.get_run_records(RunsFilter(tags={"qp/kind": "features"}))  # any job or trigger
        if r.start_time and r.end_time and _epoch(r.create_timestamp) >= since
    )
    return {"last_ack": last_ack, "step_s": step_s, "steps": steps, "runner_s": runner_s,
            "feature_s": feature_s, "first_run": first_created}  # fmt: skip


def _rows(settings, prefix: str) -> tuple[int, int]:
    """(rows of the campaign's requests in today's vqe_results, how many of them reused an earlier result)."""
    from qp_assets.features.catalog import read_rows

    try:
        table = read_rows("vqe_results", day=datetime.now(UTC).date(), settings=settings)
    except Exception:  # the table does not exist before the first feature run
        return 0, 0
    mine = [r for r in table.select(["request_id", "reused_from"]).to_pylist()
            if r["request_id"] and r["request_id"].startswith(prefix)]  # fmt: skip
    return len(mine), sum(1 for r in mine if r["reused_from"])


def run_campaign(env, path: Path, limit: int | None, timeout_s: float) -> dict:
    """Submit the campaign ``path`` (a new campaign id) and wait until every request is a row (or
    dead-lettered); returns its figures (seconds from submit) and the audit's state."""
    from qp_assets import campaigns

    campaign = campaigns.expand(campaigns.load_spec(path))
    if limit:
        campaign.requests = campaign.requests[:limit]
    n = len(campaign.requests)
    t0 = time.time()
    outcome = campaigns.submit(campaign, env.settings)
    t_submit = time.time() - t0
    print(
        f"submitted {outcome['published']}/{n} requests of {campaign.campaign_id} in {t_submit:.1f} s",
        flush=True,
    )
    done_at, rows, reused = None, 0, 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if env.daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {env.daemon.returncode}")
        rows, reused = _rows(env.settings, campaign.prefix)
        print(f"  {time.time() - t0:6.0f} s: {rows}/{n} rows ({reused} reused)", flush=True)
        if rows >= n:
            done_at = time.time()
            break
        time.sleep(5)
    state = campaigns.progress(env.settings, campaign.campaign_id)
    if done_at is None and state["done"] >= n:  # the rest were dead-lettered
        done_at = time.time()
    return {"n": n, "t0": t0, "t_submit": t_submit, "done_at": done_at, "rows": rows, "reused": reused,
            "state": state, "figures": _runner_figures(env.instance, campaign.prefix, t0)}  # fmt: skip


def report(path: Path, run: dict) -> bool:
    """Print the figures of one campaign run; True when it completed with the audit green."""
    n, t0, state, figures = run["n"], run["t0"], run["state"], run["figures"]
    if run["done_at"] is None:
        print(f"not finished: {run['rows']}/{n} rows; status {state}", file=sys.stderr)
        return False
    wall = run["done_at"] - t0
    kafka = figures["last_ack"] - t0
    print(f"\ncampaign {path.name}: {n} requests, under dagster-daemon on a fresh stack")
    print(f"{'measure':<34}{'value':>10}")
    print(f"{'wall time, submit -> last row (s)':<34}{wall:>10.1f}")
    print(f"{'runs/min end to end (Iceberg)':<34}{n / wall * 60:>10.1f}")
    print(f"{'results/min into Kafka':<34}{n / kafka * 60:>10.1f}")
    print(f"{'ratio Kafka rate / Iceberg rate':<34}{wall / kafka:>10.2f}")
    print(f"{'runs reused / computed':<34}{run['reused']:>5} / {run['rows'] - run['reused']}")
    print("\nstage (seconds from submit, share of the wall time)")
    for name, at in (("submit", run["t_submit"]), ("first run created", figures["first_run"] - t0),
                     ("last result in Kafka", kafka), ("last row in Iceberg", wall)):  # fmt: skip
        print(f"  {name:<24}{at:>8.1f} s{100 * at / wall:>7.1f} %")
    per_step = figures["step_s"] / max(figures["steps"], 1)
    print(
        f"\nrun time: run_vqe_request steps {figures['step_s']:.0f} s over {figures['steps']} steps "
        f"({per_step:.2f} s each), runner runs {figures['runner_s']:.0f} s, feature runs {figures['feature_s']:.0f} s"
    )
    print(
        f"audit (qp campaign status): done {state['done']}/{state['expected']}, rows {state['rows']}, "
        f"dead-lettered {state['dead_lettered']}, violations {state['violations']}, "
        f"{'green' if state['complete'] and not state['violations'] else 'NOT green'}"
    )
    return bool(state["complete"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, default=ROOT / "campaigns" / "small-molecules-500.yaml")
    parser.add_argument("--limit", type=int, default=None, help="submit only the first N requests")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for every row")
    parser.add_argument("--port-offset", type=int, default=None, help="default: the first free one")
    parser.add_argument(
        "--resubmit", action="store_true", help="then submit the same campaign again (same seeds): reuse"
    )
    args = parser.parse_args(argv)

    with fresh_daemon_stack(args.port_offset) as env:
        runs = [run_campaign(env, args.file, args.limit, args.timeout)]
        if args.resubmit and runs[0]["done_at"] is not None:
            runs.append(run_campaign(env, args.file, args.limit, args.timeout))
    ok = [report(args.file, run) for run in runs]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
