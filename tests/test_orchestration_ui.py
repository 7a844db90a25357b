"""The Dagster UI (dagster-webserver on an ephemeral loopback port) answers and its GraphQL API lists the
ten feature assets in their group plus the raw source asset, the jobs and the sensors."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
{
  assetNodes { assetKey { path } groupName isPartitioned }
  repositoriesOrError { ... on RepositoryConnection { nodes { name
      jobs { name } sensors { name } schedules { name } } } }
}
"""

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_graphql_lists_all_assets(tmp_path):
    from qp_assets.features.transforms import TABLES

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home), "QP_SENSORS_RUNNING": "0"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        data = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                    resp = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=60)
                    data = resp.json()["data"]
                    if data["assetNodes"]:
                        break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert data is not None, "webserver did not answer within 150 s"
        features = {
            n["assetKey"]["path"][-1]
            for n in data["assetNodes"]
            if n["groupName"] == "quantum_features" and n["isPartitioned"]
        }
        assert features == set(TABLES)
        assert ["raw_vqe_results"] in [n["assetKey"]["path"] for n in data["assetNodes"]]
        repo = data["repositoriesOrError"]["nodes"][0]
        assert {"feature_processing_job", "vqe_runner_job"} <= {j["name"] for j in repo["jobs"]}
        assert {"kafka_vqe_request_sensor", "landing_sensor"} <= {s["name"] for s in repo["sensors"]}
        assert [s["name"] for s in repo["schedules"]] == ["daily_feature_schedule"]
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:  # the webserver's code server may outlive it: end the whole group
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        log.close()
