"""Disk full under QP_HOME (issue 14): a result that can be neither published nor spooled fails loudly,
and its request is run again once there is space.

* ``test_spool_write_on_a_full_disk_fails_naming_the_path`` (no services, about 3 s): a publishing process
  runs under ``prlimit --fsize`` (a file size limit of 4 KiB: writes beyond it fail with EFBIG, as on a
  full disk) with Kafka and the registry unreachable (closed loopback port), so its result goes to the
  spool and the spool write fails. The process must exit with ``SpoolWriteError`` naming the spool file
  and ``QP_HOME``, leave no partial file, and leave an entry spooled earlier intact (``qp results replay``
  still has it).
* ``test_full_disk_fails_the_run_and_the_range_runs_again`` (the real path): one H2 request planned by the
  real request sensor; the run's registry (the ``schema_registry`` resource the publish uses) goes through
  a loopback :class:`FaultProxy` that holds the first connection. That connection is the publish (the VQE
  is done): at that moment this process's file size limit drops to 1 KiB (``RLIMIT_FSIZE``; Python ignores
  SIGXFSZ, so writes fail with EFBIG as on a full disk) and the proxy resets every connection, so the
  result goes to the spool and the spool write fails. The run fails with ``SpoolWriteError``, no spool
  file is left. Then the limit is lifted and the proxy forwards ("space is back"): the sensor's next tick
  re-requests the range (``:attempt2``), which publishes the one result; the request ends as exactly one
  vqe_results row (audit after the suite's build, test_zz_audit). Recovery = space back -> landed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.faults import flow
from tests.faults.tools import FaultProxy, expect

pytestmark = [pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]
PUBLISH = """
import dataclasses, sys
from datetime import UTC, datetime
from pathlib import Path
from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.streaming.publisher import publish_result
closed = "127.0.0.1:9"  # discard port: nothing listens, connections are refused at once
s = dataclasses.replace(Settings.from_env(), schema_registry_url=f"http://{closed}/apis/ccompat/v7",
                        kafka_bootstrap_servers=closed, runtime_dir=Path(sys.argv[1]))
publish_result(make_result(0, datetime.now(UTC), run_id="diskfull-run0", num_iterations=200), s)
"""


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_spool_write_on_a_full_disk_fails_naming_the_path(tmp_path: Path) -> None:
    home = tmp_path / "qp-home"
    spool = home / "spool"
    spool.mkdir(parents=True, mode=0o700)
    earlier = spool / "earlier-run.json"
    earlier.write_text(json.dumps({"topic": "t", "key": "earlier-run", "record": {"x": 1}}))
    before = earlier.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["prlimit", "--fsize=4096", sys.executable, "-c", PUBLISH, str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("qp_assets.streaming.publisher.SpoolWriteError: could not publish diskfull-run0")
    assert f"nor spool it to {spool / 'diskfull-run0.json'}: File too large" in last
    assert f"QP_HOME={home}" in last and "nothing stored" in last
    assert sorted(p.name for p in spool.iterdir()) == ["earlier-run.json"]  # no partial or temp file
    assert earlier.read_bytes() == before


def _fill_disk_at_publish(proxy: FaultProxy, limit_bytes: int) -> threading.Thread:
    """A thread that, at the proxy's first connection (held: the publish's registry call), lowers this
    process's file size limit to ``limit_bytes`` and then resets every proxy connection."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while proxy.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
        proxy.set_mode("reset")

    thread = threading.Thread(target=watch, name="disk-full", daemon=True)
    thread.start()
    return thread


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_full_disk_fails_the_run_and_the_range_runs_again(stack, monkeypatch) -> None:
    from dagster import DagsterInstance, Definitions

    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.definitions import defs
    from qp_assets.resources.core import SchemaRegistryResource
    from qp_assets.sensors.range_retry import last_error
    from qp_assets.streaming.publisher import spool_dir

    settings = stack
    monkeypatch.setenv("QP_REQUEST_RANGE_RETRY_DELAY_S", "0")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    proxy, url = FaultProxy.for_url(settings.schema_registry_url, max_lifetime_s=240)
    proxy.set_mode("stall")
    registry = SchemaRegistryResource(url=url, timeout_s=10)
    resources = {**defs.resources, "schema_registry": registry}
    job = Definitions(jobs=[build_vqe_runner_job()], resources=resources).resolve_job_def("vqe_runner_job")
    prefix = flow.new_prefix("diskfull")
    spooled_before = sorted(spool_dir(settings).iterdir())
    try:
        with DagsterInstance.ephemeral() as instance:
            cursor = flow.cursor_at_end(settings)
            since = datetime.now(UTC).replace(microsecond=0)
            flow.submit_h2(settings, prefix, 1)
            (planned,), cursor = flow.tick(instance, defs, cursor)
            filler = _fill_disk_at_publish(proxy, 1024)
            try:
                failed = flow.execute(instance, job, planned)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # space is back
            filler.join(5)
            assert proxy.connections > 0 and not filler.is_alive()  # the publish went through the proxy
            assert not failed.success
            error = last_error(instance, failed.run_id)
            assert f"nor spool it to {spool_dir(settings)}/" in error, error
            assert "File too large (disk full under QP_HOME=" in error and "nothing stored" in error, error
            assert sorted(spool_dir(settings).iterdir()) == spooled_before  # no partial or temp file
            proxy.set_mode("forward")
            back = time.monotonic()
            (retry,), cursor = flow.tick(instance, defs, cursor)
            assert retry.run_key == f"{planned.run_key}:attempt2"
            ok = flow.execute(instance, job, retry)
            assert ok.success
            assert flow.tick(instance, defs, cursor)[0] == []  # nothing left to retry
            from qp_assets import e2e

            run_ids = e2e.published_run_ids(instance, [ok.run_id])
            assert len(run_ids) == 1
            flow.wait_landed(settings, run_ids, since)
            recovery = flow.monotonic_since(back)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        proxy.close()
    expect("disk full under QP_HOME (spool write fails)", prefix, flow.today(),
           {"requests": 1, "ok_row": 1, "iceberg_rows": 1, "result_messages": 1, "dlq_entries": 0},
           recovery, settings, "run failed with SpoolWriteError, sensor re-ran the range; recovery = space back -> landed")  # fmt: skip
