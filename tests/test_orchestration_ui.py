"""The Dagster UI, for real: dagster-webserver (+ dagster-daemon) on a free loopback port, driven by
Playwright through Debian's headless Chromium, on the local stack.

* ``test_webserver_graphql_lists_all_assets``: GraphQL lists the ten feature assets in their group, the
  raw source asset, the jobs, the sensors and the schedule (no stack needed).
* ``test_lineage_shows_the_ten_feature_assets``: the lineage page, groups expanded, shows the ten feature
  tables inside the ``quantum_features`` group and the raw source asset.
* ``test_sensor_run_shows_energy_and_convergence_plot``: one H2 request on ``vqe.requests``; the daemon's
  ``kafka_vqe_request_sensor`` launches ``vqe_runner_job``; its run page shows Success, the energy (FCI
  within chemical accuracy) and the convergence plot (a decoded PNG).
* ``test_materialize_today_from_ui``: once that result has landed in S3, Materialize -> Latest (today)
  -> Launch 1 run; the run succeeds, the run page says so, and the vqe_results asset page shows today's
  materialization by that run with the row count Iceberg holds.
* ``test_backfill_three_days_from_ui``: Materialize -> Custom [today-2...today] (two empty days) ->
  Launch backfill; the backfill succeeds as one run and its page shows 3 of 3 partitions succeeded for
  each of the ten tables; vqe_results' partitions tab counts exactly those three days materialized.

On failure each browser test saves a full-page screenshot (path in the error) under a tmp dir.
"""

import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from ui_browser import (
    browser_page,
    metadata_row,
    metadata_value,
    open_materialize_dialog,
    screenshot_on_failure,
    skip_community_dialog,
    toast_link,
)
from ui_dagster import DagsterServer, dagster_home

H2_FCI = -1.13727017  # hartree, /work/shared/data/reference_molecules.json
CHEMICAL_ACCURACY_HA = 1.6e-3

QUERY = """
{
  assetNodes { assetKey { path } groupName isPartitioned }
  repositoriesOrError { ... on RepositoryConnection { nodes { name
      jobs { name } sensors { name } schedules { name } } } }
}
"""


#: The lineage page of the feature tables' asset group (code location ``qp_assets.definitions``).
FEATURE_GROUP_PAGE = "/locations/qp_assets.definitions/asset-groups/quantum_features"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_webserver_graphql_lists_all_assets(tmp_path):
    from qp_assets.features.transforms import TABLES

    server = DagsterServer(
        home=dagster_home(tmp_path), logs=tmp_path, env={"QP_SENSORS_RUNNING": "0"}, daemon=False
    )
    try:
        server.start().wait_ready(timeout_s=150)
        data = server.graphql(QUERY)
    finally:
        server.stop()
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


# --- browser tests: one webserver + daemon and one browser for the module -----------------------------


def browser_test(fn):
    """Marks of the browser tests: the real stack, Spark (feature runs), slow."""
    return pytest.mark.services(pytest.mark.spark(pytest.mark.slow(fn)))


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture(scope="module")
def dagster_ui(stack, tmp_path_factory):
    """webserver + daemon on a fresh instance; every sensor STOPPED until a test starts one."""
    base = tmp_path_factory.mktemp("dagster-ui")
    server = DagsterServer(
        home=dagster_home(base),
        logs=base,
        env={
            "QP_SENSORS_RUNNING": "0",  # the landing sensor must not race the UI's own feature runs
            "QP_REQUEST_SENSOR_INTERVAL_S": "2",
            "QP_FEATURE_RETRY_DELAY_S": "10",  # shorter than the product's 60 s
            "QP_SMTP_HOST": "",
        },
    )
    try:
        server.start().wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(dagster_ui):
    with browser_page() as page:
        skip_community_dialog(page, dagster_ui.url)
        yield page


@pytest.fixture(scope="module")
def h2_request(stack, dagster_ui):
    """Kafka sensor started at the end of vqe.requests, then one H2 request published (not waited for)."""
    from qp_assets import e2e
    from qp_assets.resources.core import REQUESTS_TOPIC
    from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
    from qp_assets.streaming.publisher import REQUEST_PARTITIONS, ensure_topic, publish_request

    ensure_topic(stack, REQUESTS_TOPIC, REQUEST_PARTITIONS)
    marks = read_watermarks(stack.kafka_bootstrap_servers, REQUESTS_TOPIC)
    assert marks, f"{REQUESTS_TOPIC} has no partitions after ensure_topic"
    cursor = dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})
    dagster_ui.start_sensor("kafka_vqe_request_sensor", cursor)
    h2 = e2e.molecule_requests(("H2",))[0]["molecule"]
    request = e2e.build_request(h2, {"seed": 3}, request_id=f"ui-{uuid.uuid4().hex[:10]}")
    since = datetime.now(UTC).replace(microsecond=0)
    outcome = publish_request(request, stack)
    assert outcome.published and outcome.offset is not None, outcome
    return {"request": request, "partition": outcome.partition, "offset": outcome.offset, "since": since}


@pytest.fixture(scope="module")
def sensor_run(dagster_ui, h2_request):
    """The vqe_runner_job run the daemon's sensor launched for our request's offset, finished."""
    from qp_assets.resources.core import REQUESTS_TOPIC

    part, offset = h2_request["partition"], h2_request["offset"]
    deadline = time.monotonic() + 120
    run_id = None
    while run_id is None and time.monotonic() < deadline:
        dagster_ui.check_alive()
        for run in dagster_ui.runs("vqe_runner_job", {"dagster/sensor_name": "kafka_vqe_request_sensor"}):
            key = {t["key"]: t["value"] for t in run["tags"]}.get("dagster/run_key", "")
            m = re.fullmatch(rf"{re.escape(REQUESTS_TOPIC)}:(\d+):(\d+)-(\d+)", key)
            if m and int(m[1]) == part and int(m[2]) <= offset < int(m[3]):
                run_id = run["runId"]
        if run_id is None:
            time.sleep(2)
    assert run_id, f"the sensor launched no run for offset {part}:{offset} in 120 s\n{dagster_ui.log_tail()}"
    run = dagster_ui.wait_run_finished(run_id, timeout_s=240)
    assert run["status"] == "SUCCESS", dagster_ui.run_failure(run_id)
    return {**h2_request, "run_id": run_id}


@pytest.fixture(scope="module")
def today_landed(stack, dagster_ui, sensor_run):
    """Today's data: the sensor run's VQE result landed in S3 by Kafka Connect."""
    from dagster import DagsterInstance

    from qp_assets import e2e

    if not httpx.get(f"{stack.kafka_connect_url}/connectors", timeout=10).json():
        pytest.skip("Kafka Connect has no connector registered yet: results cannot land in S3")
    with DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        result_ids = e2e.published_run_ids(instance, [sensor_run["run_id"]])
    assert len(result_ids) == 1, result_ids
    e2e.wait_for_landing(stack, result_ids, sensor_run["since"], timeout_s=180)
    return {**sensor_run, "result_run_id": result_ids[0], "day": datetime.now(UTC).date()}


@browser_test
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("h2_request")  # the daemon works on the request meanwhile
def test_lineage_shows_the_ten_feature_assets(dagster_ui, page, shots):
    from qp_assets.features.transforms import TABLES

    with screenshot_on_failure(page, shots, "lineage"):
        page.goto(f"{dagster_ui.url}/asset-groups")
        page.get_by_text("Global asset lineage").wait_for()
        group = page.locator("[class*=collapsedGroupNode]").filter(has_text="quantum_features").first
        group.wait_for()  # collapsed: the group node counts its assets
        assert "10" in group.inner_text()
        for other in ("raw", "ml", "campaigns"):  # the other groups beside it
            page.locator("[class*=collapsedGroupNode]").filter(has_text=other).first.wait_for()
        # the feature group's own lineage page (the global graph, with the ML and campaign groups, is drawn
        # too small for whole names): the ten tables and their raw source, names in full
        page.goto(f"{dagster_ui.url}{FEATURE_GROUP_PAGE}")
        page.get_by_text("Asset Group in", exact=False).first.wait_for()
        # the ten tables as nodes; their upstream source and the downstream ML tables (other groups) as links
        for name in [*TABLES, "raw_vqe_results", "ml_run_summary", "ml_iteration_features"]:
            node = page.get_by_text(name, exact=True).first
            node.wait_for()
            assert node.is_visible(), f"{name} not visible in the quantum_features lineage"
        # the raw source's description is Markdown: its S3 path must survive the rendering
        page.goto(f"{dagster_ui.url}/assets/raw_vqe_results")
        page.get_by_text("s3://<bucket>/raw/topics/<topic>/year=/month=/day=/hour=/", exact=True).wait_for()


@browser_test
@pytest.mark.timeout(420)
def test_sensor_run_shows_energy_and_convergence_plot(dagster_ui, page, shots, sensor_run):
    request_id = sensor_run["request"]["request_id"]
    with screenshot_on_failure(page, shots, "sensor_run"):
        page.goto(f"{dagster_ui.url}/runs/{sensor_run['run_id']}")
        page.get_by_text("RUN_SUCCESS", exact=True).wait_for()
        assert page.get_by_text("Success", exact=True).first.is_visible()
        assert page.get_by_text("kafka_vqe_request_sensor").count() >= 1  # "Launched by"
        # the step outputs (the event log is virtualized and long: filter it as a user would)
        log_filter = page.get_by_placeholder("Filter…")
        log_filter.fill("type:STEP_OUTPUT")
        log_filter.press("Enter")
        page.get_by_text("total_energy_ha", exact=True).wait_for()
        # the VQE op's output carries ~20 metadata entries: the row shows a few, the dialog all of them
        page.get_by_text("total_energy_ha", exact=True).hover()
        page.get_by_role("button", name="View full message").first.click()
        message = page.get_by_role("dialog").filter(has_text="STEP_OUTPUT")
        message.wait_for()
        assert metadata_value(message, "request_id") == request_id
        assert metadata_value(message, "molecule") == "H2"
        energy = float(metadata_value(message, "total_energy_ha"))
        assert abs(energy - H2_FCI) < CHEMICAL_ACCURACY_HA, energy
        assert float(metadata_value(message, "error_vs_exact_mha")) < CHEMICAL_ACCURACY_HA * 1e3
        assert metadata_value(message, "published") == "true"
        assert metadata_value(message, "device_used") == "CPU"
        # the convergence plot: Markdown with an inline PNG, rendered in its own dialog
        metadata_row(message, "convergence_plot").get_by_text("[Show Markdown]").click()
        plot = page.get_by_role("dialog").filter(has_text="convergence_plot").filter(has=page.locator("img"))
        img = plot.locator("img")
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        src, width, height = img.evaluate("e => [e.src.slice(0, 22), e.naturalWidth, e.naturalHeight]")
        assert src == "data:image/png;base64,", src
        assert width >= 300 and height >= 200, (width, height)
        plot.get_by_role("button", name="Close").click()
        message.get_by_role("button", name="Done").click()


@browser_test
@pytest.mark.timeout(600)
def test_materialize_today_from_ui(stack, dagster_ui, page, shots, today_landed):
    from qp_assets.features.catalog import read_rows

    today = today_landed["day"].isoformat()
    with screenshot_on_failure(page, shots, "materialize_today"):
        page.goto(f"{dagster_ui.url}{FEATURE_GROUP_PAGE}")  # the group's "Materialize all": its ten tables
        dialog = open_materialize_dialog(page)
        dialog.get_by_role("button", name="Latest", exact=True).click()
        assert dialog.get_by_role("textbox").first.input_value() == today
        dialog.get_by_text("1 partition", exact=True).wait_for()
        dialog.get_by_role("button", name="Launch 1 run").click()
        run_id = toast_link(page, "/runs/").rsplit("/", 1)[-1]
        run = dagster_ui.wait_run_finished(run_id, timeout_s=420)
        assert run["status"] == "SUCCESS", dagster_ui.run_failure(run_id)
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["dagster/partition"] == today
        # a UI launch (implicit asset job): tagged like sensor runs by the instance's run coordinator
        assert tags["qp/kind"] == "features", (run["jobName"], tags)

        page.goto(f"{dagster_ui.url}/runs/{run_id}")
        page.get_by_text("RUN_SUCCESS", exact=True).wait_for()
        assert page.get_by_text("Success", exact=True).first.is_visible()
        assert page.get_by_text(f"partition: {today}").first.is_visible()

        rows = read_rows("vqe_results", day=today_landed["day"], settings=stack)
        assert today_landed["request"]["request_id"] in rows.column("request_id").to_pylist()
        page.goto(f"{dagster_ui.url}/assets/quantum_features/vqe_results")
        latest = page.get_by_text("Latest materialization", exact=True).locator("xpath=..")
        latest.get_by_text(today, exact=True).wait_for()
        assert latest.locator(f"a[href^='/runs/{run_id}']").count() == 1  # materialized by our run
        row_count = page.get_by_text("Row count", exact=True).locator("xpath=..")
        assert row_count.inner_text().split()[-1] == str(rows.num_rows)


@browser_test
@pytest.mark.timeout(600)
def test_backfill_three_days_from_ui(dagster_ui, page, shots, today_landed):
    from qp_assets.features.transforms import TABLES

    last: date = today_landed["day"]
    first = last - timedelta(days=2)  # today-2 and today-1 hold no data
    with screenshot_on_failure(page, shots, "backfill"):
        page.goto(f"{dagster_ui.url}{FEATURE_GROUP_PAGE}")
        dialog = open_materialize_dialog(page)
        dialog.get_by_role("button", name="Custom", exact=True).click()
        box = dialog.get_by_role("textbox").first
        box.fill(f"[{first.isoformat()}...{last.isoformat()}]")
        box.press("Enter")
        dialog.get_by_text("3 partitions", exact=True).wait_for()
        dialog.get_by_role("button", name="Launch backfill").click()
        backfill_id = toast_link(page, "/runs/b/").rstrip("/").rsplit("/", 1)[-1]
        backfill = dagster_ui.wait_backfill_finished(backfill_id, timeout_s=480)
        failures = [dagster_ui.run_failure(r["runId"]) for r in backfill["runs"] if r["status"] != "SUCCESS"]
        assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, failures)
        assert backfill["numPartitions"] == 3
        assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"]  # BackfillPolicy.single_run

        page.goto(f"{dagster_ui.url}/runs/b/{backfill_id}")
        page.get_by_text("Partitions targeted").wait_for()
        page.get_by_text(f"{first.isoformat()}...{last.isoformat()}").wait_for()
        assert page.get_by_text("Succeeded", exact=True).count() >= 2  # the status and the column head
        for name in TABLES:
            link = page.locator(f"a[href='/assets/quantum_features/{name}']")
            # the asset's row: name + progress bar, then targeted / in progress / succeeded / failed
            cells = link.evaluate(
                "a => { let e = a; while (e && e.children.length < 5) e = e.parentElement;"
                " return [...e.children].map(c => c.innerText.trim()); }"
            )
            assert cells[-4:] == ["3", "0", "3", "0"], (name, cells)
            assert "100% completed" in cells[0], (name, cells)

        # the asset's partitions tab: exactly these three days materialized on this fresh instance
        page.goto(f"{dagster_ui.url}/assets/quantum_features/vqe_results?view=partitions")
        page.get_by_text("Materialized (3)", exact=True).wait_for()
        total = int(
            re.search(r"(\d+) Partitions Selected", page.get_by_text("Partitions Selected").inner_text())[1]
        )
        assert page.get_by_text(f"Missing ({total - 3})", exact=True).is_visible()
        assert page.get_by_text("Failed (0)", exact=True).is_visible()
