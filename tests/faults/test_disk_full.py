"""Disk full under QP_HOME (issue 14): a result that can be neither published nor spooled fails loudly.

A publishing process runs under ``prlimit --fsize`` (a file size limit of 4 KiB: writes beyond it fail
with EFBIG, as on a full disk) with Kafka and the registry unreachable (closed loopback port), so its
result goes to the spool and the spool write fails. The process must exit with ``SpoolWriteError`` naming
the spool file and ``QP_HOME``, leave no partial file, and leave an entry spooled earlier intact (``qp
results replay`` still has it). The run that published fails with that error, so the request sensor's
range retry runs the request again (``sensors/range_retry.py``): nothing is reported done that is not
stored. No services needed (about 2 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
