"""The Dagster UI, for real: dagster-webserver (+ dagster-daemon) on a free loopback port, driven by
Playwright through Debian's headless Chromium, on the local stack.

* ``test_webserver_graphql_lists_all_assets``: GraphQL lists the ten feature assets in their group, the
  raw source asset, the jobs, the sensors and the schedule (on the module's webserver: starting a second
  one for it cost about 12 s).
* ``test_lineage_shows_the_ten_feature_assets``: the lineage page, groups expanded, shows the ten feature
  tables inside the ``quantum_features`` group and the raw source asset; vqe_results' page shows its
  automation condition.
* ``test_sensor_run_shows_energy_and_convergence_plot``: one H2 request on ``vqe.requests``; the daemon's
  ``kafka_vqe_request_sensor`` launches ``vqe_runner_job``; its run page shows Success, the energy (FCI
  within chemical accuracy) and the convergence plot (a decoded PNG).
* ``test_materialize_today_from_ui``: once that result has landed in S3, Materialize -> Latest (today)
  -> Launch 1 run; the run succeeds, the run page says so, and the vqe_results asset page shows today's
  materialization by that run with the row count Iceberg holds.
* ``test_backfill_three_days_from_ui``: Materialize -> Custom [today-2...today] (two empty days) ->
  Launch backfill; the backfill succeeds as one run and its page shows 3 of 3 partitions succeeded for
  each of the ten tables; vqe_results' partitions tab counts exactly those three days materialized.
* ``test_campaign_progress_then_ml_assets_from_ui``: ``qp campaign submit`` of a 4-run campaign (H2,
  HeH+ x 2 optimizers); with the campaign and feature-trigger sensors on, the campaign's ``campaign_progress``
  partition page is reloaded until it says complete (4 of 4 done, 4 rows, after an incomplete state); then
  the ML group's Materialize all -> Latest (today) -> Launch 1 run; the run succeeds, the two ML tables
  show today's row counts as Iceberg holds them (the campaign's runs among them) and the convergence model
  shows its cross-validation: runs and molecules as in ml_run_summary, mean MAE and one fold per molecule
  as in the metrics JSON it stored in S3.

On failure each browser test saves a full-page screenshot (path in the error) under a tmp dir.
"""

import json
import re
import subprocess
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
from ui_dagster import BIN, DagsterServer, dagster_home

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


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_webserver_graphql_lists_all_assets(dagster_ui):
    from qp_assets.features.transforms import TABLES

    data = dagster_ui.graphql(QUERY)
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


# --- one webserver + daemon and one browser for the module -------------------------------------------


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
            "QP_CAMPAIGN_SENSOR_INTERVAL_S": "15",  # the campaign test watches progress: product 60 s
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


def asset_row_count(page, url: str, day: str, run_id: str) -> int:
    """The Row count of the asset at ``url``, after checking its latest materialization is ``day`` by ``run_id``."""
    page.goto(url)
    latest = page.get_by_text("Latest materialization", exact=True).locator("xpath=..")
    latest.get_by_text(day, exact=True).wait_for()
    assert latest.locator(f"a[href^='/runs/{run_id}']").count() == 1, url
    return int(
        page.get_by_text("Row count", exact=True)
        .locator("xpath=..")
        .inner_text()
        .split()[-1]
        .replace(",", "")
    )


def materialize_latest_from_ui(page, dagster_ui, group_page: str, day: str) -> dict:
    """On the lineage page ``group_page``: Materialize all -> Latest (``day``) -> Launch 1 run; returns the
    finished run (GraphQL), asserted SUCCESS and tagged with partition ``day``."""
    page.goto(f"{dagster_ui.url}{group_page}")
    dialog = open_materialize_dialog(page)
    dialog.get_by_role("button", name="Latest", exact=True).click()
    assert dialog.get_by_role("textbox").first.input_value() == day
    dialog.get_by_text("1 partition", exact=True).wait_for()
    dialog.get_by_role("button", name="Launch 1 run").click()
    run_id = toast_link(page, "/runs/").rsplit("/", 1)[-1]
    run = dagster_ui.wait_run_finished(run_id, timeout_s=420)
    assert run["status"] == "SUCCESS", dagster_ui.run_failure(run_id)
    assert {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"] == day
    return run


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
        # a feature table's page shows its automation condition (QP_FEATURE_TRIGGER=automation, the default)
        page.goto(f"{dagster_ui.url}/assets/quantum_features/vqe_results")
        page.get_by_text("landed files not covered by a build").first.wait_for()


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
        # the group's "Materialize all": its ten tables
        run = materialize_latest_from_ui(page, dagster_ui, FEATURE_GROUP_PAGE, today)
        run_id = run["runId"]
        tags = {t["key"]: t["value"] for t in run["tags"]}
        # a UI launch (implicit asset job): tagged like sensor runs by the instance's run coordinator
        assert tags["qp/kind"] == "features", (run["jobName"], tags)

        page.goto(f"{dagster_ui.url}/runs/{run_id}")
        page.get_by_text("RUN_SUCCESS", exact=True).wait_for()
        assert page.get_by_text("Success", exact=True).first.is_visible()
        assert page.get_by_text(f"partition: {today}").first.is_visible()

        rows = read_rows("vqe_results", day=today_landed["day"], settings=stack)
        assert today_landed["request"]["request_id"] in rows.column("request_id").to_pylist()
        url = f"{dagster_ui.url}/assets/quantum_features/vqe_results"
        assert asset_row_count(page, url, today, run_id) == rows.num_rows  # materialized by our run


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


#: 4 short runs of two molecules (the convergence model's leave-one-molecule-out CV needs two or more).
UI_CAMPAIGN = """\
name: ui-browser
molecules: [H2, HeH+]
config: {basis: sto3g, ansatz: uccsd, max_iterations: 100}
matrix:
  optimizer: [L-BFGS-B, SLSQP]
seeds: [7]
force: true  # simulate every run, even when an earlier test left the same experiment in Iceberg
"""
ML_GROUP_PAGE = "/locations/qp_assets.definitions/asset-groups/ml"


def _metadata_cell(page, key: str):
    """The value cell (last column) of the asset page's metadata row ``key``."""
    return metadata_row(page, key).locator(":scope > td").last


@browser_test
@pytest.mark.timeout(720)
def test_campaign_progress_then_ml_assets_from_ui(stack, dagster_ui, page, shots, today_landed, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from qp_assets import campaigns
    from qp_assets.features.catalog import read_rows
    from qp_assets.s3 import s3_client
    from qp_assets.settings import load_env

    today = today_landed["day"].isoformat()
    spec = tmp_path / "campaign.yaml"
    spec.write_text(UI_CAMPAIGN)
    submitted = subprocess.run(
        [str(BIN / "qp"), "campaign", "submit", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    outcome = json.loads(submitted.stdout)
    campaign_id = outcome["campaign_id"]
    assert outcome["requests"] == outcome["published"] == 4, outcome
    client = s3_client(stack)
    model_key = None
    try:
        # the request sensor runs since h2_request; today's features are built when the results land (the
        # landing sensor observes them, feature_automation_sensor requests the run; under
        # QP_FEATURE_TRIGGER=sensor the landing sensor requests it); the campaign sensor adds the partition
        # and refreshes its progress (every 15 s here)
        dagster_ui.start_sensor("campaign_sensor")
        dagster_ui.start_sensor("landing_sensor")
        if load_env().feature_trigger == "automation":
            dagster_ui.start_sensor("feature_automation_sensor")
        with screenshot_on_failure(page, shots, "campaign_progress"):
            url = f"{dagster_ui.url}/assets/campaign_progress?view=partitions&partition={campaign_id}"
            seen: list[tuple[str, str]] = []  # (done, complete) of each materialization shown
            deadline = time.monotonic() + 360
            while time.monotonic() < deadline:
                dagster_ui.check_alive()
                page.goto(url)
                try:  # the partition is added by the sensor's first tick, its metadata by the progress run
                    metadata_row(page, "complete").wait_for(timeout=10_000)
                except PlaywrightTimeout:
                    continue
                state = (metadata_value(page, "done"), metadata_value(page, "complete"))
                if not seen or seen[-1] != state:
                    seen.append(state)
                if state[1] == "true":
                    break
                time.sleep(5)
            assert seen and seen[-1] == ("4", "true"), f"progress seen: {seen}\n{dagster_ui.log_tail()}"
            assert seen[0][1] == "false" and int(seen[0][0]) < 4, seen  # watched it move, not only its end
            for key, value in {"expected": "4", "rows": "4", "dead_lettered": "0", "in_flight": "0",
                               "violations": "0", "done_percent": "100"}.items():  # fmt: skip
                assert metadata_value(page, key) == value, (key, metadata_value(page, key))
            history = page.get_by_text(re.compile(r"View all historical events \(\d+\)")).inner_text()
            assert int(re.search(r"\((\d+)\)", history)[1]) >= 2, history

        with screenshot_on_failure(page, shots, "ml_from_ui"):
            # the ml group's "Materialize all": the two ML tables (today) and the convergence model
            run_id = materialize_latest_from_ui(page, dagster_ui, ML_GROUP_PAGE, today)["runId"]

            summary = read_rows("ml_run_summary", day=today_landed["day"], settings=stack)
            request_ids = summary.column("request_id").to_pylist()
            ours = sorted(r for r in request_ids if r.startswith(f"{campaign_id}/"))
            assert ours == [f"{campaign_id}/{n:05d}" for n in range(4)], ours  # one summary row per request
            iterations = read_rows("ml_iteration_features", day=today_landed["day"], settings=stack)
            assert iterations.num_rows >= summary.num_rows  # one row per iteration, every run has one
            for table, rows in (("ml_run_summary", summary), ("ml_iteration_features", iterations)):
                url = f"{dagster_ui.url}/assets/quantum_features/{table}"
                assert asset_row_count(page, url, today, run_id) == rows.num_rows, table

            # the model is trained on every day of ml_run_summary: runs with an error and a molecule
            usable = [r for r in read_rows("ml_run_summary", settings=stack).to_pylist()
                      if r["error_vs_exact_mha"] is not None and r["molecule_name"]]  # fmt: skip
            per_molecule = {
                m: sum(r["molecule_name"] == m for r in usable) for m in {r["molecule_name"] for r in usable}
            }
            assert {"H2", "HeH+"} <= set(per_molecule), per_molecule
            page.goto(f"{dagster_ui.url}/assets/convergence_model")
            page.get_by_text("cv_mae_mean", exact=True).wait_for()
            assert _metadata_cell(page, "runs").inner_text().strip() == str(len(usable))
            assert _metadata_cell(page, "molecules").inner_text().strip() == str(len(per_molecule))
            assert _metadata_cell(page, "target").inner_text().strip() == "log10_error_mha"
            metrics_uri = _metadata_cell(page, "metrics_uri").inner_text().strip()
            assert metrics_uri.startswith(f"s3://{stack.bucket}/models/convergence_model/"), metrics_uri
            metrics_key = metrics_uri.split("/", 3)[3]
            metrics = json.loads(client.get_object(Bucket=stack.bucket, Key=metrics_key)["Body"].read())
            if _metadata_cell(page, "reused").inner_text().strip() == "false":
                model_key = metrics_key.rsplit("/", 1)[0] + "/"  # this test's version: removed after
            shown_mae = float(_metadata_cell(page, "cv_mae_mean").inner_text())
            assert shown_mae == pytest.approx(metrics["cv_mae_mean"], rel=1e-9), (shown_mae, metrics)
            folds = _metadata_cell(page, "folds").locator("tr")
            header = folds.first.locator("th").all_inner_texts()
            assert header == ["held-out molecule", "train runs", "test runs", "MAE", "baseline MAE"], header
            shown = {}
            for row in folds.all()[1:]:
                molecule, n_train, n_test, mae, _baseline = row.locator("td").all_inner_texts()
                shown[molecule] = (int(n_train), int(n_test), float(mae))
            assert {m: n for m, (_t, n, _mae) in shown.items()} == per_molecule, (shown, per_molecule)
            assert all(t == len(usable) - per_molecule[m] for m, (t, _n, _mae) in shown.items()), shown
            stored = {f["molecule"]: round(f["mae"], 4) for f in metrics["cv"]["folds"]}
            assert {m: mae for m, (_t, _n, mae) in shown.items()} == stored, (shown, stored)
    finally:
        client.delete_object(Bucket=stack.bucket, Key=campaigns.manifest_key(campaign_id))
        if model_key:
            for obj in client.list_objects_v2(Bucket=stack.bucket, Prefix=model_key).get("Contents", []):
                client.delete_object(Bucket=stack.bucket, Key=obj["Key"])
