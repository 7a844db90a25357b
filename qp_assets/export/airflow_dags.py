"""Render Airflow 3 DAG files from the Dagster asset graph.

Two DAGs are written:

* ``quantum_feature_processing``: daily (data-interval timetable, so ``ds`` is the finished day), one BashOperator per exported feature asset in the asset
  graph's dependency order; each task runs ``dagster asset materialize -m <module> --select <key>
  --partition {{ ds }}`` so Dagster stays the single implementation of every table.
* ``vqe_batch_generation``: manually triggered (or on a configurable schedule); submits the VQE
  requests of a molecules file through ``qp request submit``.

Generated code uses only Airflow 3 APIs: ``airflow.sdk.DAG``, the standard provider's BashOperator,
``schedule=`` and SmtpNotifier callbacks (the Airflow 2 ``email_on_*`` flags are deprecated in 3.x).
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from qp_assets.export.graph import ExportedAsset, ExportError, exported_assets
from qp_assets.settings import PROJECT_ROOT, runtime_dir

FEATURE_DAG_ID = "quantum_feature_processing"
VQE_BATCH_DAG_ID = "vqe_batch_generation"
DEFAULT_MODULE = "qp_assets.definitions"


def _venv_bin(name: str) -> str:
    """Absolute path of a console script next to the running interpreter (falls back to the bare name)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


_JINJA = re.compile(r"\{\{|\{%|\{#")
_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")


def _is_cron(text: object) -> bool:
    """A 5-field cron expression made only of cron characters (digits, names, ``* / , - ? #``)."""
    return (
        isinstance(text, str) and len(text.split()) == 5 and all(_CRON_FIELD.match(f) for f in text.split())
    )


@dataclass(frozen=True)
class AirflowExportOptions:
    """Knobs of the generated DAGs.

    ``start_date`` None means the earliest partition start of the exported assets. ``retry_delay``
    is in minutes. ``email`` receives failure (per task) and success (per DAG run) notifications
    through the SMTP connection ``smtp_conn_id``.
    """

    start_date: dt.date | None = None
    email: Sequence[str] = ("quantum-pipeline@localhost",)
    email_from: str = "airflow@localhost"
    smtp_conn_id: str = "smtp_default"
    retries: int = 3
    retry_delay_minutes: float = 20.0
    schedule: str = "0 0 * * *"
    catchup: bool = False
    module: str = DEFAULT_MODULE
    job: str | None = None
    group: str | None = None
    dagster_bin: str = field(default_factory=lambda: _venv_bin("dagster"))
    qp_bin: str = field(default_factory=lambda: _venv_bin("qp"))
    project_dir: str = str(PROJECT_ROOT)
    dagster_home: str | None = field(
        default_factory=lambda: os.environ.get("DAGSTER_HOME") or str(runtime_dir() / "dagster_home")
    )
    molecules_file: str = str(PROJECT_ROOT / "qp_assets" / "vqe" / "data" / "molecules.json")
    vqe_batch_schedule: str | None = None
    submit_args: str = ""

    def validate(self) -> None:
        """Raise ExportError naming the first bad field.

        Values end up only as Python literals and single argv entries (never in shell or Python source),
        so validation is about meaning, plus: no Jinja syntax in the notification fields that the SMTP
        notifier renders as templates (``to``, ``from_email``).
        """
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise ExportError(f"retries must be an integer, got {self.retries!r}")
        if self.retries < 0:
            raise ExportError(f"retries must be >= 0, got {self.retries}")
        if (
            isinstance(self.retry_delay_minutes, bool)
            or not isinstance(self.retry_delay_minutes, int | float)
            or not math.isfinite(self.retry_delay_minutes)
            or self.retry_delay_minutes < 0
        ):
            raise ExportError(
                f"retry_delay_minutes must be a finite number >= 0, got {self.retry_delay_minutes!r}"
            )
        if not self.email or isinstance(self.email, str):
            raise ExportError("email: at least one address is required (a list of addresses)")
        for name, addresses in (("email", self.email), ("email_from", [self.email_from])):
            for address in addresses:
                if not isinstance(address, str) or "@" not in address or any(c.isspace() for c in address):
                    raise ExportError(f"{name}: not an e-mail address: {address!r}")
                if _JINJA.search(address):
                    raise ExportError(f"{name}: template syntax is not allowed in an address: {address!r}")
        if not _is_cron(self.cron):
            raise ExportError(
                f"schedule: expected a 5-field cron expression or @daily, got {self.schedule!r}"
            )
        if self.vqe_batch_schedule is not None and not (
            self.vqe_batch_schedule in _PRESETS or _is_cron(self.vqe_batch_schedule)
        ):
            raise ExportError(
                f"vqe_batch_schedule: expected a 5-field cron expression or a preset ({', '.join(_PRESETS)}), "
                f"got {self.vqe_batch_schedule!r}"
            )
        for name in ("module", "dagster_bin", "qp_bin", "project_dir", "molecules_file", "smtp_conn_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ExportError(f"{name}: expected a non-empty string without NUL bytes, got {value!r}")
        if self.dagster_home is not None and (
            not isinstance(self.dagster_home, str) or "\x00" in self.dagster_home
        ):
            raise ExportError(
                f"dagster_home: expected a path string without NUL bytes, got {self.dagster_home!r}"
            )
        if self.start_date is not None and not isinstance(self.start_date, dt.date):
            raise ExportError(f"start_date: expected a date, got {self.start_date!r}")
        split_submit_args(self.submit_args)

    @property
    def cron(self) -> str:
        """The feature DAG's cron (``@daily`` -> ``0 0 * * *``)."""
        text = str(self.schedule).strip()
        return {"@daily": "0 0 * * *", "@midnight": "0 0 * * *"}.get(text, text)


def _py(value: object) -> str:
    """A Python literal for ``value`` (str, int, float, bool, None, lists/dicts of those).

    Every exported value reaches the generated source only through this function, so no value can end a
    string literal and start code: ``repr`` escapes quotes, backslashes, newlines and non-printables.
    """
    text = repr(value)
    if ast.literal_eval(text) != value:  # a type whose repr is not a literal: refuse rather than emit code
        raise ExportError(f"cannot embed {type(value).__name__} value {value!r} in the generated DAG")
    return text


def _comment(label: str, value: object) -> str:
    """One ``# label: 'value'`` line (the repr keeps a hostile value on one line and inert)."""
    return f"# {label}: {_py(value)}"


def _start_date(
    assets: Sequence[ExportedAsset], defs: dg.Definitions, options: AirflowExportOptions
) -> dt.date:
    if options.start_date is not None:
        return options.start_date
    graph = defs.resolve_asset_graph()
    starts = []
    for asset in assets:
        partitions_def = graph.get(asset.key).partitions_def
        if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            starts.append(partitions_def.start.date())
    return min(starts) if starts else dt.date.today()


# The generated files. Values of the export options appear only as Python literals made by _py (never in
# a docstring, a shell string or a Jinja template), and tasks run their command as an argv list without a
# shell (subprocess, shell=False): a parameter, a path or an extra argument is always exactly one argument.
_HEADER = '''"""{title}

Generated by `qp export airflow` from Dagster Definitions (module and selection below).
Do not edit: re-run the export when the asset graph changes.

Tasks run their command as an argument list (no shell, no templating of values): DAG params and export
options always arrive as single, verbatim arguments.
"""

{source}

from __future__ import annotations

import datetime as dt
import os
import subprocess

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

PROJECT_DIR = {project_dir}
TASK_ENV = {task_env}
EMAIL_TO = {email}


def _notifier(subject: str) -> SmtpNotifier:
    return SmtpNotifier(
        to=EMAIL_TO,
        from_email={email_from},
        smtp_conn_id={smtp_conn_id},
        subject=subject,
        html_content="DAG {{{{ dag.dag_id }}}}, run {{{{ run_id }}}}, logical date {{{{ ds }}}}: " + subject,
    )


def run_argv(argv: list[str]) -> None:
    """Run ``argv`` without a shell in PROJECT_DIR, TASK_ENV over the worker's environment; fail on exit != 0."""
    env = {{**os.environ, **TASK_ENV}}
    if TASK_ENV.get("DAGSTER_HOME"):
        os.makedirs(TASK_ENV["DAGSTER_HOME"], exist_ok=True)
    print("running " + repr(argv), flush=True)
    subprocess.run(argv, cwd=PROJECT_DIR, env=env, check=True)


default_args = {{
    "owner": "quantum-pipeline",
    "depends_on_past": False,
    "retries": {retries},
    "retry_delay": dt.timedelta(minutes={retry_delay}),
    "on_failure_callback": _notifier("[quantum-pipeline] task {{{{ ti.task_id }}}} failed"),
}}
'''

IN_PROCESS_CONFIG = '{"execution": {"config": {"in_process": {}}}}'


def in_process_run_config(defs: dg.Definitions) -> str | None:
    """Run config that keeps a single-asset materialization in one process, when the asset job allows it.

    Each Airflow task already is its own process; Dagster's default executor would fork one more per
    step. Only the default ``multi_or_in_process_executor`` accepts this config (None otherwise).
    """
    try:
        executor = defs.resolve_implicit_global_asset_job_def().executor_def
    except Exception:  # no implicit asset job (e.g. mixed partitions): keep the default
        return None
    return IN_PROCESS_CONFIG if executor is dg.multi_or_in_process_executor else None


def _header(title: str, source: list[str], options: AirflowExportOptions, task_env: dict[str, str]) -> str:
    return _HEADER.format(
        title=title,
        source="\n".join(source),
        project_dir=_py(str(options.project_dir)),
        task_env=_py(task_env),
        email=_py([str(e) for e in options.email]),
        email_from=_py(str(options.email_from)),
        smtp_conn_id=_py(str(options.smtp_conn_id)),
        retries=_py(int(options.retries)),
        retry_delay=_py(float(options.retry_delay_minutes)),
    )


def _start_literal(start_date: dt.date) -> str:
    y, m, d = int(start_date.year), int(start_date.month), int(start_date.day)
    return f"dt.datetime({y}, {m}, {d}, tzinfo=dt.timezone.utc)"


def materialize_argv(
    dagster_bin: str, module: str, selection: str, partition: str, run_config_json: str | None = None
) -> list[str]:
    """The argv one feature task runs (the generated ``materialize_argv`` builds the same list).

    ``--opt=value`` forms keep a value that starts with ``-`` a value.
    """
    argv = [dagster_bin, "asset", "materialize", f"--module-name={module}", f"--select={selection}"]
    argv.append(f"--partition={partition}")
    if run_config_json:
        argv.append(f"--config-json={run_config_json}")
    return argv


def render_feature_dag(
    assets: Sequence[ExportedAsset],
    options: AirflowExportOptions,
    start_date: dt.date,
    source: str = "",
    run_config_json: str | None = None,
) -> str:
    """Python source of the ``quantum_feature_processing`` DAG (one task per asset, edges as in ``assets``).

    Each task runs ``dagster asset materialize --module-name=<module> --select=<key> --partition=<ds>``
    as an argv list (see :func:`materialize_argv`); ``run_config_json`` is passed as ``--config-json``.
    """
    if not assets:
        raise ExportError("no assets to export")
    task_env = {"DAGSTER_HOME": str(options.dagster_home)} if options.dagster_home else {}
    head = _header(
        "Daily feature processing: one Dagster asset materialization per task.",
        [_comment("Dagster Definitions module", str(options.module)), _comment("selection", source.strip())],
        options,
        task_env,
    )
    extra = [f"--config-json={run_config_json}"] if run_config_json else []
    lines = [
        head,
        f"DAGSTER = {_py(str(options.dagster_bin))}",
        f"MODULE = {_py(str(options.module))}",
        f"EXTRA = {_py(extra)}",
        "",
        "",
        "def materialize_argv(selection: str, ds: str) -> list[str]:",
        '    """argv materializing one asset for the run\'s logical date (daily partition key = ds)."""',
        "    return [",
        '        DAGSTER, "asset", "materialize", "--module-name=" + MODULE, "--select=" + selection,',
        '        "--partition=" + ds, *EXTRA,',
        "    ]  # fmt: skip",
        "",
        "",
        "def materialize_task(task_id: str, selection: str, doc_md: str, **kwargs):",
        '    """A task running materialize_argv(selection, ds) (no shell, nothing templated)."""',
        "",
        "    @task(task_id=task_id, doc_md=doc_md, **kwargs)",
        "    def materialize() -> None:",
        '        run_argv(materialize_argv(selection, get_current_context()["ds"]))',
        "",
        "    return materialize()",
        "",
        "",
        "with DAG(",
        f"    dag_id={_py(FEATURE_DAG_ID)},",
        '    description="Materialize the daily-partitioned Iceberg feature assets through Dagster",',
        # Data-interval semantics: the run for day D starts after D ends and its logical date (ds) is D,
        # i.e. the complete day partition (Airflow 3's plain cron default would pass the run time instead).
        f"    schedule=CronDataIntervalTimetable({_py(options.cron)}, timezone='UTC'),",
        f"    start_date={_start_literal(start_date)},",
        f"    catchup={_py(bool(options.catchup))},",
        "    max_active_runs=1,",
        "    default_args=default_args,",
        f"    tags={_py(['quantum-pipeline', 'features', 'dagster'])},",
        ") as dag:",
        "    tasks = {}",
    ]
    # Success mail: on the sink task(s), i.e. once per DAG run when the graph has one final asset
    # (processing_metadata). Task callbacks run in the task runner with the real DAG object.
    has_downstream = {up for a in assets for up in a.upstream}
    for asset in assets:
        success = ""
        if asset.task_id not in has_downstream:
            success = '        on_success_callback=_notifier("[quantum-pipeline] {{ dag.dag_id }} {{ ds }} succeeded"),'
        lines += [
            f"    tasks[{_py(asset.task_id)}] = materialize_task(",
            f"        {_py(asset.task_id)},",
            f"        {_py(asset.selection)},",
            f"        {_py(asset.description or asset.selection)},",
            *([success] if success else []),
            "    )",
        ]
    edges = [(up, a.task_id) for a in assets for up in a.upstream]
    if edges:
        lines.append("")
    for upstream, downstream in edges:
        lines.append(f"    tasks[{_py(upstream)}] >> tasks[{_py(downstream)}]")
    return "\n".join(lines) + "\n"


def split_submit_args(submit_args: str | Sequence[str]) -> list[str]:
    """``--submit-args`` as an argv list: a string is split like a POSIX shell would (quotes group, nothing
    is expanded or executed); a sequence is taken as is. Raises ExportError for unbalanced quotes."""
    if isinstance(submit_args, str):
        try:
            return shlex.split(submit_args, comments=False, posix=True)
        except ValueError as exc:
            raise ExportError(f"submit_args: cannot split {submit_args!r}: {exc}") from None
    return [str(a) for a in submit_args]


def submit_argv(
    qp_bin: str, molecules_file: str, repeat: int, ts_nodash: str, extra: Sequence[str] = ()
) -> list[str]:
    """The argv of the batch DAG's task (the generated ``submit_argv`` builds the same list)."""
    return [
        qp_bin, "request", "submit", "--all", f"--molecules-file={molecules_file}", f"--repeat={int(repeat)}",
        f"--request-id-prefix=airflow-{ts_nodash}-", *extra,
    ]  # fmt: skip


def render_vqe_batch_dag(options: AirflowExportOptions, start_date: dt.date) -> str:
    """Python source of ``vqe_batch_generation``: submit every molecule of a JSON file as a VQE request.

    The file is a DAG param (``molecules_file``) so a trigger can point at another batch; it reaches
    ``qp request submit`` as the single argument ``--molecules-file=<value>`` (see :func:`submit_argv`).
    """
    head = _header(
        "Submit a batch of VQE requests (one per molecule) to Kafka topic vqe.requests.",
        [_comment("Dagster Definitions module", str(options.module))],
        options,
        {},
    )
    lines = [
        head,
        "from airflow.sdk import Param  # noqa: E402",
        "",
        f"QP = {_py(str(options.qp_bin))}",
        f"SUBMIT_ARGS = {_py(split_submit_args(options.submit_args))}",
        "",
        "",
        "def submit_argv(molecules_file: str, repeat: int, ts_nodash: str) -> list[str]:",
        '    """argv of `qp request submit` for the triggered params (each value one argument)."""',
        "    return [",
        '        QP, "request", "submit", "--all", "--molecules-file=" + str(molecules_file),',
        '        "--repeat=" + str(int(repeat)), "--request-id-prefix=airflow-" + ts_nodash + "-", *SUBMIT_ARGS,',
        "    ]  # fmt: skip",
        "",
        "",
        "with DAG(",
        f"    dag_id={_py(VQE_BATCH_DAG_ID)},",
        '    description="Submit VQE requests for every molecule in a molecules JSON file",',
        f"    schedule={_py(options.vqe_batch_schedule)},",
        f"    start_date={_start_literal(start_date)},",
        "    catchup=False,",
        "    max_active_runs=1,",
        "    default_args=default_args,",
        "    params={",
        f'        "molecules_file": Param({_py(str(options.molecules_file))}, type="string", '
        'description="JSON list of molecules (see the molecule input contract)"),',
        '        "repeat": Param(1, type="integer", minimum=1, description="requests per molecule"),',
        "    },",
        f"    tags={_py(['quantum-pipeline', 'vqe'])},",
        ") as dag:",
        "",
        "    @task(",
        '        task_id="submit_vqe_requests",',
        '        doc_md="Validates the molecules and publishes one Avro request per molecule (bad input fails the task).",',
        "        retries=0,",
        "    )",
        "    def submit_vqe_requests() -> None:",
        "        context = get_current_context()",
        '        params = context["params"]',
        '        run_argv(submit_argv(params["molecules_file"], params["repeat"], context["ts_nodash"]))',
        "",
        "    submit_vqe_requests()",
    ]
    return "\n".join(lines) + "\n"


def ensure_writable_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and prove it is writable by writing a probe file (ExportError otherwise)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output directory {str(out_dir)!r} is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"output directory {str(out_dir)!r} cannot be created: {exc.strerror or exc}"
        ) from exc
    if not out_dir.is_dir():
        raise ExportError(f"output directory {str(out_dir)!r} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".qp-export-probe-"):
            pass
    except OSError as exc:
        raise ExportError(
            f"output directory {str(out_dir)!r} is not writable: {exc.strerror or exc}"
        ) from exc
    return out_dir


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_airflow(
    defs: dg.Definitions, out_dir: Path, options: AirflowExportOptions | None = None
) -> list[Path]:
    """Write both DAG files into ``out_dir``; returns their paths. Raises ExportError on bad input."""
    options = options or AirflowExportOptions()
    options.validate()
    out = ensure_writable_dir(Path(out_dir))
    assets = exported_assets(defs, job=options.job, group=options.group)
    start = _start_date(assets, defs, options)
    if options.group:
        source = f" (asset group {options.group!r})"
    else:
        source = f" (job {options.job or 'feature_processing_job'!r})"
    written = []
    for name, text in (
        (
            f"{FEATURE_DAG_ID}.py",
            render_feature_dag(assets, options, start, source, in_process_run_config(defs)),
        ),
        (f"{VQE_BATCH_DAG_ID}.py", render_vqe_batch_dag(options, start)),
    ):
        compile(text, name, "exec")  # a generated file must at least be valid Python
        path = out / name
        _write_atomic(path, text)
        written.append(path)
    return written
