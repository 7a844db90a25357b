"""A fork server for run workers: ``dagster api execute_run`` without the cold start.

Dagster's default launcher starts every run in a fresh ``spawn`` process of the code server, which imports
Dagster and the definitions again, and the run then imports the simulator (PySCF, qiskit-nature, the numba
kernels): about 3 s before the run starts plus seconds of imports inside its first step, on every run
(2-core VM). This process does those imports once and then forks one child per run; the child runs exactly
what ``dagster api execute_run ARGS`` runs (the command's own function, same arguments), with every module
already loaded.

Protocol (:class:`qp_assets.assets.run_launcher.QpRunLauncher` is the only client), one JSON object per
line on stdin/stdout:

* at start, once everything is imported (and, for the platform's definitions, the VQE steps warmed up:
  ``vqe_runner.prepare_run_worker``): ``{"ready": true, "pid": N, "import_s": S}`` (or
  ``{"error": "..."}`` and exit 1);
* request ``{"execute_run_args": "<serialized ExecuteRunArgs>"}`` -> ``{"pid": N}`` (the run worker's pid);
  ``{"stale": "<file>"}`` when a loaded source file of the project changed since the imports (the process
  then exits: the client starts a fresh one, so a run never executes old code);
* stdin closed (the launcher's process exited) -> exit. Run workers already forked go on.

The children are reaped here (SIGCHLD), so a dead worker never lingers as a zombie that run monitoring
would count as alive. Nothing here starts a thread or opens a connection before forking: a child inherits
no lock held by another thread and no socket.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

#: Modules imported beyond the code location's own: what every run worker needs (Dagster's run execution).
RUN_WORKER_MODULES = ("dagster._cli.api", "dagster._core.execution.api")


def source_snapshot(root: Path) -> dict[str, int]:
    """``{path: mtime_ns}`` of every loaded module whose file lies under ``root`` (the project's sources),
    leaving out the interpreter's environment (a virtualenv inside the project: 3205 of 3260 files, checked
    before every fork for nothing)."""
    out = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.startswith(str(root)) and not path.startswith(sys.prefix + os.sep):
            try:
                out[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
    return out


def changed_source(snapshot: dict[str, int]) -> str | None:
    """The first file of ``snapshot`` that changed or vanished since, else None."""
    for path, mtime in snapshot.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return path
        except OSError:
            return path
    return None


def preload(job_origin_json: str) -> None:
    """Import Dagster's run execution, the code location of ``job_origin_json`` (a serialized
    ``JobPythonOrigin``) with its repository built, and the modules its VQE steps warm."""
    from dagster._core.origin import JobPythonOrigin
    from dagster._serdes import deserialize_value
    from dagster._utils.hosted_user_process import recon_job_from_origin

    for name in RUN_WORKER_MODULES:
        importlib.import_module(name)
    recon_job_from_origin(deserialize_value(job_origin_json, JobPythonOrigin)).get_definition()
    if "qp_assets.assets.vqe_runner" in sys.modules:  # this code location runs VQE requests
        from qp_assets.assets.vqe_runner import prepare_run_worker

        try:
            prepare_run_worker()
        except Exception as exc:  # noqa: BLE001 - a cold first call in each run, not a reason to stop
            print(
                f"run fork server: VQE warm-up failed, runs pay their first calls: {exc!r}", file=sys.stderr
            )


def _reap(_signum, _frame) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(execute_run_args: str) -> NoReturn:
    """In the forked child: become a plain run worker and run ``dagster api execute_run``. Ends with
    SystemExit, which unwinds out of the fork server's loop into a normal interpreter exit (atexit handlers,
    logging and stdio flushed, non-daemon threads joined), as a cold run worker's ends."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # prints go to the fork server's stderr (the daemon's log), not the protocol pipe
        os.close(devnull)
        from dagster._cli.api import execute_run_command

        execute_run_command.callback(input_json=execute_run_args, compressed_input_json=None)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, then the exit code says it
        traceback.print_exc()
    raise SystemExit(code)


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(job_origin_json: str, root: Path) -> int:
    """Preload, then fork one run worker per request until stdin closes. Returns the exit code."""
    started = time.monotonic()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stops with its process group, even if started ignoring it
    try:
        preload(job_origin_json)
    except Exception as exc:  # noqa: BLE001 - reported to the launcher, which keeps the default path
        _reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    snapshot = source_snapshot(root)
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:  # the children will not have them (and may inherit their locks held): say so
        print(f"run fork server: threads left by the imports: {extra}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, _reap)
    _reply({"ready": True, "pid": os.getpid(), "import_s": round(time.monotonic() - started, 2)})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            args = request["execute_run_args"]
        except (ValueError, KeyError, TypeError) as exc:
            _reply({"error": f"bad request: {exc}"})
            continue
        stale = changed_source(snapshot)
        if stale:
            _reply({"stale": stale})
            return 0
        pid = os.fork()
        if pid == 0:
            _child(args)
        _reply({"pid": pid})
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m qp_assets.assets.run_forkserver JOB_ORIGIN_JSON [PROJECT_ROOT]``."""
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[1] if len(argv) > 1 else os.getcwd()).resolve()
    try:
        return serve(argv[0], root)
    except KeyboardInterrupt:  # Ctrl-C of `dagster dev` reaches the whole process group: exit quietly
        return 130


if __name__ == "__main__":
    sys.exit(main())
