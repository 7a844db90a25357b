"""Unit tests of the Airflow exporter against small synthetic Definitions (no Airflow, no services)."""

from __future__ import annotations

import ast
import datetime as dt
import re
import shlex
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from qp_assets.export.airflow_dags import (
    AirflowExportOptions,
    export_airflow,
    render_feature_dag,
    submit_argv,
)
from qp_assets.export.cli import register
from qp_assets.export.graph import ExportError, exported_assets, is_daily, task_id_for, toposort_keys

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")


def _synthetic_defs(extra_assets: list | None = None, group: str = "quantum_features") -> dg.Definitions:
    """raw (external) -> molecules, vqe_results -> iterations -> processing_metadata (+ a prefixed key)."""
    raw = dg.AssetSpec("raw_vqe_results")

    @dg.asset(partitions_def=DAILY, group_name=group, deps=[raw])
    def molecules(): ...

    @dg.asset(partitions_def=DAILY, group_name=group, deps=[raw], key_prefix=["quantum_features"])
    def vqe_results(): ...

    @dg.asset(partitions_def=DAILY, group_name="staging", deps=[vqe_results])
    def staged_iterations(): ...

    @dg.asset(partitions_def=DAILY, group_name=group, deps=[staged_iterations])
    def vqe_iterations(): ...

    @dg.asset(partitions_def=DAILY, group_name=group, deps=[molecules, vqe_results, vqe_iterations])
    def processing_metadata():
        """One row per built day."""

    assets = [raw, molecules, vqe_results, staged_iterations, vqe_iterations, processing_metadata]
    assets += extra_assets or []
    job = dg.define_asset_job("feature_processing_job", selection=dg.AssetSelection.groups(group))
    return dg.Definitions(assets=assets, jobs=[job])


def test_export_order_and_edges_follow_asset_graph() -> None:
    assets = exported_assets(_synthetic_defs())
    ids = [a.task_id for a in assets]
    assert set(ids) == {"molecules", "quantum_features__vqe_results", "vqe_iterations", "processing_metadata"}
    position = {t: i for i, t in enumerate(ids)}
    edges = {(up, a.task_id) for a in assets for up in a.upstream}
    # vqe_iterations reaches vqe_results only through the unselected staging asset: kept transitively.
    assert edges == {
        ("quantum_features__vqe_results", "vqe_iterations"),
        ("molecules", "processing_metadata"),
        ("quantum_features__vqe_results", "processing_metadata"),
        ("vqe_iterations", "processing_metadata"),
    }
    assert all(position[u] < position[d] for u, d in edges)
    by_id = {a.task_id: a for a in assets}
    assert by_id["quantum_features__vqe_results"].selection == "quantum_features/vqe_results"
    assert by_id["processing_metadata"].description == "One row per built day."


def test_new_asset_appears_without_touching_exporter() -> None:
    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=["molecules"])
    def ansatz_info(): ...

    ids = [a.task_id for a in exported_assets(_synthetic_defs([ansatz_info]))]
    assert "ansatz_info" in ids and ids.index("molecules") < ids.index("ansatz_info")


def test_assets_read_by_checks_become_upstream_edges() -> None:
    """A task materializes its asset with its checks, so a check's additional deps must run first."""

    @dg.asset(partitions_def=DAILY, group_name="g")
    def results(): ...

    @dg.asset(partitions_def=DAILY, group_name="g")
    def iterations(): ...

    @dg.asset_check(asset=iterations, additional_deps=[results])
    def iterations_match_results() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    defs = dg.Definitions(assets=[results, iterations], asset_checks=[iterations_match_results])
    by_id = {a.task_id: a for a in exported_assets(defs, group="g")}
    assert by_id["iterations"].upstream == ("results",)
    assert by_id["results"].upstream == ()


def test_group_selection() -> None:
    assets = exported_assets(_synthetic_defs(), group="staging")
    assert [a.task_id for a in assets] == ["staged_iterations"]
    with pytest.raises(ExportError, match="asset group 'nope' has no assets"):
        exported_assets(_synthetic_defs(), group="nope")


def test_unknown_job_is_named() -> None:
    with pytest.raises(ExportError, match="job 'missing_job' not found"):
        exported_assets(_synthetic_defs(), job="missing_job")


def test_unpartitioned_asset_mixed_in_is_rejected() -> None:
    @dg.asset(group_name="quantum_features")
    def summary_report(): ...

    with pytest.raises(ExportError, match="asset 'summary_report' is unpartitioned"):
        exported_assets(_synthetic_defs([summary_report]))


def test_non_daily_partitions_are_rejected() -> None:
    @dg.asset(
        partitions_def=dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00"),
        group_name="quantum_features",
    )
    def hourly_thing(): ...

    with pytest.raises(ExportError, match="asset 'hourly_thing' has partitions .*expected daily"):
        exported_assets(_synthetic_defs([hourly_thing]))
    assert is_daily(DAILY)
    assert not is_daily(dg.StaticPartitionsDefinition(["a"]))
    assert not is_daily(dg.WeeklyPartitionsDefinition(start_date="2026-01-05"))


def test_cycle_in_definitions_is_named() -> None:
    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=["loop_b"])
    def loop_a(): ...

    @dg.asset(partitions_def=DAILY, group_name="quantum_features", deps=[loop_a])
    def loop_b(): ...

    with pytest.raises(ExportError, match="dependency cycle.*loop_"):
        exported_assets(_synthetic_defs([loop_a, loop_b]))


def test_toposort_cycle_message_names_the_cycle() -> None:
    assert toposort_keys({"a": [], "b": ["a"], "c": ["a", "b"]}) == ["a", "b", "c"]
    with pytest.raises(ExportError, match=r"dependency cycle among assets: (x -> y -> x|y -> x -> y)"):
        toposort_keys({"x": ["y"], "y": ["x"], "z": []})


def test_task_id_sanitizes_key_parts() -> None:
    assert task_id_for(dg.AssetKey(["quantum features", "vqe/results"])) == "quantum_features__vqe_results"


def test_non_writable_out_dir_is_rejected(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"output directory '.*a_file/dags' cannot be created"):
        export_airflow(_synthetic_defs(), blocker / "dags")
    with pytest.raises(ExportError, match="is not a directory"):
        export_airflow(_synthetic_defs(), blocker)


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="email: not an e-mail address: 'nobody'"):
        export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(email=("nobody",)))
    with pytest.raises(ExportError, match="retries must be >= 0, got -1"):
        export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(retries=-1))
    with pytest.raises(
        ExportError, match="schedule: expected a 5-field cron expression or @daily, got 'daily'"
    ):
        export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(schedule="daily"))
    assert AirflowExportOptions(schedule="@daily").cron == "0 0 * * *"


def test_rendered_feature_dag_settings(tmp_path: Path) -> None:
    options = AirflowExportOptions(email=("chem@example.org",), start_date=dt.date(2026, 3, 1))
    paths = export_airflow(_synthetic_defs(), tmp_path, options)
    assert [p.name for p in paths] == ["quantum_feature_processing.py", "vqe_batch_generation.py"]
    text = paths[0].read_text()
    for needle in (
        "from airflow.sdk import DAG",
        "from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task",
        "schedule=CronDataIntervalTimetable('0 0 * * *', timezone='UTC')",
        "catchup=False",
        '"retries": 3',
        "dt.timedelta(minutes=20.0)",
        "EMAIL_TO = ['chem@example.org']",
        "dt.datetime(2026, 3, 1,",
        "tasks['quantum_features__vqe_results'] = materialize_task(",
        "subprocess.run(argv, cwd=PROJECT_DIR, env=env, check=True)",
    ):
        assert needle in text, needle
    for removed in (
        "schedule_interval",
        "airflow.operators.bash",
        "email_on_failure",
        "DummyOperator",
        "BashOperator",
        "shell=True",
        '{{ ds }}"',
    ):
        assert removed not in text
    # start date defaults to the first partition of the exported assets
    default_start = render_feature_dag(
        exported_assets(_synthetic_defs()), AirflowExportOptions(), dt.date(2026, 1, 1)
    )
    assert "dt.datetime(2026, 1, 1," in default_start
    batch = paths[1].read_text()
    assert "schedule=None" in batch


def generated_argv_builders(source: str) -> dict:
    """The upper-case literal constants and the ``*_argv`` functions of a generated DAG file, evaluated
    without Airflow (they are plain Python over literals): what a task would run, as a list."""
    tree = ast.parse(source)
    namespace: dict = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.isupper()
        ):
            namespace[node.targets[0].id] = ast.literal_eval(node.value)  # literals only, or this raises
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.endswith("_argv")]
    exec(compile(ast.Module(body=functions, type_ignores=[]), "<generated>", "exec"), namespace)  # noqa: S102
    return namespace


def test_batch_dag_command_is_accepted_by_qp_cli(tmp_path: Path) -> None:
    """The batch task's argv, built by the generated code, parses with the real `qp` parser."""
    from qp_assets.cli import build_parser

    paths = export_airflow(
        _synthetic_defs(), tmp_path, AirflowExportOptions(submit_args="--basis 6-31g --seed 3")
    )
    generated = generated_argv_builders(paths[1].read_text())
    defaults = AirflowExportOptions()
    argv = generated["submit_argv"](defaults.molecules_file, 2, "20260114T000000")
    assert argv == submit_argv(
        defaults.qp_bin, defaults.molecules_file, 2, "20260114T000000", ["--basis", "6-31g", "--seed", "3"]
    )
    assert argv[0] == defaults.qp_bin and Path(defaults.molecules_file).exists()
    args = build_parser().parse_args(argv[1:])
    assert args.handler.__name__ == "submit_command"
    assert args.all is True and str(args.molecules_file) == defaults.molecules_file and args.repeat == 2
    assert args.request_id_prefix == "airflow-20260114T000000-"
    assert args.basis == "6-31g" and args.seed == 3


def test_feature_dag_command_is_accepted_by_dagster_cli(tmp_path: Path) -> None:
    """Each feature task's argv is `dagster asset materialize` with module, selection, partition, config."""
    paths = export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(dagster_bin="/opt/d/dagster"))
    generated = generated_argv_builders(paths[0].read_text())
    argv = generated["materialize_argv"]("quantum_features/vqe_results", "2026-01-14")
    assert argv == [
        "/opt/d/dagster",
        "asset",
        "materialize",
        "--module-name=qp_assets.definitions",
        "--select=quantum_features/vqe_results",
        "--partition=2026-01-14",
        '--config-json={"execution": {"config": {"in_process": {}}}}',
    ]
    from dagster._cli.asset import asset_materialize_command

    ctx = asset_materialize_command.make_context("materialize", argv[3:])
    assert (
        ctx.params["module_name"] == ("qp_assets.definitions",)
        or ctx.params["module_name"] == "qp_assets.definitions"
    )
    assert ctx.params["select"] == "quantum_features/vqe_results" and ctx.params["partition"] == "2026-01-14"


def _cli(argv: list[str]) -> int:
    import argparse

    from qp_assets.cli_errors import run_handler

    parser = argparse.ArgumentParser(prog="qp")
    register(parser.add_subparsers(dest="command"))
    return run_handler(parser.parse_args(argv))


def test_cli_exports_from_module_and_exits_2_on_bad_input(tmp_path: Path, monkeypatch, capsys) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "qp_synth_defs.py").write_text(
        textwrap.dedent(
            """
            import dagster as dg
            daily = dg.DailyPartitionsDefinition(start_date="2026-02-01")
            @dg.asset(partitions_def=daily, group_name="g")
            def a(): ...
            @dg.asset(partitions_def=daily, group_name="g", deps=[a])
            def b(): ...
            @dg.asset(group_name="other", deps=[b])
            def unpartitioned_c(): ...
            defs = dg.Definitions(assets=[a, b, unpartitioned_c])
            """
        )
    )
    monkeypatch.syspath_prepend(str(module_dir))
    out = tmp_path / "dags"
    base = ["export", "airflow", "--out", str(out), "--module", "qp_synth_defs"]
    assert _cli([*base, "--job", "__ASSET_JOB"]) == 2
    assert "unpartitioned_c" in capsys.readouterr().err
    assert _cli([*base, "--group", "nope"]) == 2
    assert _cli([*base.copy()[:-1], "no_such_module_xyz"]) == 2
    assert _cli([*base, "--group", "g", "--email", "ops@example.org", "--retries", "5"]) == 0
    text = (out / "quantum_feature_processing.py").read_text()
    assert "tasks['a'] >> tasks['b']" in text and '"retries": 5' in text and "dt.datetime(2026, 2, 1," in text
    with pytest.raises(SystemExit) as exc:
        _cli([*base, "--start-date", "01/02/2026"])
    assert exc.value.code == 2


def test_cli_options_map_by_name_and_keep_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qp_assets.cli import build_parser
    from qp_assets.export.cli import _options

    monkeypatch.chdir(tmp_path)
    base = ["export", "airflow", "--out", "dags"]
    args = build_parser("export").parse_args(
        [
            *base,
            "--email",
            "a@example.org",
            "--email",
            "b@example.org",
            "--retries",
            "5",
            "--project-dir",
            "p",
        ]
    )
    given = _options(args)
    assert given.email == ("a@example.org", "b@example.org") and given.retries == 5
    assert given.project_dir == str(tmp_path.resolve() / "p") and given.start_date is None
    defaults = AirflowExportOptions()
    plain = _options(build_parser("export").parse_args(base))
    assert (plain.email, plain.qp_bin, plain.project_dir, plain.retry_delay_minutes) == (
        defaults.email,
        defaults.qp_bin,
        defaults.project_dir,
        20.0,
    )
    assert plain.schedule == "@daily" and plain.cron == "0 0 * * *"


PAYLOAD = '"+__import__("os").popen("id").read()+"'
HOSTILE = [
    PAYLOAD,
    "x'; import os; os.system('id') #",
    "$(id) `id` ; id && id | id",
    'a\nimport os\nos.system("id")\n',
    '"""\nimport os\n"""',
    "\\'\\\"",
    "{{ 7 * 7 }} {% if 1 %}x{% endif %}",
    "--help",
]


def _structure(source: str) -> str:
    """The generated module's AST with every string constant blanked: equal structures mean a value could
    only ever change data, never code."""

    class Blank(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.Constant:  # noqa: N802 - ast hook name
            return ast.Constant(value="S" if isinstance(node.value, str) else node.value)

    return ast.dump(Blank().visit(ast.parse(source)))


def hostile_options(value: str, tmp_path: Path) -> AirflowExportOptions:
    """Every free-text export option set to ``value`` (addresses keep an @ and no space, as validated)."""
    address = value.replace(" ", "").replace("\n", "").replace("{", "").replace("%", "") + "@example.org"
    return AirflowExportOptions(
        email=(address, "ops@example.org"),
        email_from=address,
        smtp_conn_id=value,
        module=value,
        dagster_bin=value,
        qp_bin=value,
        project_dir=value,
        dagster_home=value,
        molecules_file=value,
        submit_args=shlex.join([value, "--seed", value]),
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_option_values_change_data_not_code(tmp_path: Path, value: str) -> None:
    """Quotes, $(...), backticks, ;, newlines, triple quotes, Jinja and the issue's payload in every option:
    the generated files have exactly the benign files' syntax tree (values are literals only), and each value
    reaches the command as one verbatim argument."""
    benign = export_airflow(
        _synthetic_defs(),
        tmp_path / "benign",
        AirflowExportOptions(email=("a@example.org", "ops@example.org"), submit_args="a --seed b"),
    )
    hostile = export_airflow(_synthetic_defs(), tmp_path / "hostile", hostile_options(value, tmp_path))
    for good, bad in zip(benign, hostile, strict=True):
        assert _structure(bad.read_text()) == _structure(good.read_text()), bad.name
    feature = generated_argv_builders(hostile[0].read_text())
    assert feature["DAGSTER"] == value and feature["MODULE"] == value
    assert feature["PROJECT_DIR"] == value and feature["TASK_ENV"] == {"DAGSTER_HOME": value}
    argv = feature["materialize_argv"]("quantum_features/vqe_results", "2026-01-14")
    assert argv[0] == value and argv[3] == "--module-name=" + value
    batch = generated_argv_builders(hostile[1].read_text())
    argv = batch["submit_argv"](value, 1, "20260114T000000")
    assert argv[0] == value and argv[4] == "--molecules-file=" + value
    assert argv[-3:] == [value, "--seed", value]


def test_submit_args_are_split_at_export_time(tmp_path: Path) -> None:
    paths = export_airflow(
        _synthetic_defs(),
        tmp_path,
        AirflowExportOptions(submit_args="--basis '6-31g*' --optimizer-options '{\"maxiter\": 5}'"),
    )
    assert (
        "SUBMIT_ARGS = ['--basis', '6-31g*', '--optimizer-options', '{\"maxiter\": 5}']"
        in paths[1].read_text()
    )
    with pytest.raises(ExportError, match="submit_args: cannot split"):
        export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(submit_args="--basis 'unterminated"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"email": ("{{7*7}}@x.org",)}, "email: template syntax is not allowed"),
        ({"email_from": "a{%x%}@x.org"}, "email_from: template syntax is not allowed"),
        ({"retries": "3); import os #"}, "retries must be an integer"),
        ({"retry_delay_minutes": float("nan")}, "retry_delay_minutes must be a finite number"),
        ({"schedule": "0 0 * * *'); import os #"}, "schedule: expected a 5-field cron"),
        ({"schedule": "0 0 * * $(id)"}, "schedule: expected a 5-field cron"),
        ({"vqe_batch_schedule": "@daily; id"}, "vqe_batch_schedule: expected"),
        ({"module": "a\x00b"}, "module: expected a non-empty string without NUL bytes"),
    ],
)
def test_values_that_cannot_be_literal_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ExportError, match=re.escape(message)):
        export_airflow(_synthetic_defs(), tmp_path, AirflowExportOptions(**options))
