"""A separate, cached Airflow virtual environment for loading and running the exported DAGs.

Airflow and Dagster pin incompatible versions of shared libraries, so Airflow lives in its own venv
(default ``<runtime_dir>/airflow-venv``) installed from PyPI with the pinned closure in
``airflow-constraints.txt``. A stamp file holding the constraints' hash makes re-runs free.
``AIRFLOW_HOME`` stays under the runtime directory too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from qp_assets.settings import load_env, runtime_dir

CONSTRAINTS = Path(__file__).with_name("airflow-constraints.txt")
AIRFLOW_REQUIREMENTS = ("apache-airflow==3.3.2", "apache-airflow-providers-standard==1.21.0")


class AirflowEnvError(RuntimeError):
    """The Airflow venv could not be created (message carries the installer's last output lines)."""


def _stamp_value() -> str:
    digest = hashlib.sha256(CONSTRAINTS.read_bytes())
    digest.update(" ".join(AIRFLOW_REQUIREMENTS).encode())
    return digest.hexdigest()


def airflow_venv_dir() -> Path:
    return Path(load_env().airflow_venv or runtime_dir() / "airflow-venv")


def ensure_airflow_venv(venv: Path | None = None, timeout_s: float = 900.0) -> Path:
    """Create/refresh the Airflow venv; returns its python. Uses ``uv`` when present, else venv + pip."""
    venv = Path(venv or airflow_venv_dir())
    python = venv / "bin" / "python"
    stamp = venv / ".qp-airflow-stamp"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == _stamp_value():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    base_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        if uv:
            interpreter = getattr(sys, "_base_executable", None) or sys.executable
            subprocess.run(
                [uv, "venv", "--allow-existing", "--python", interpreter, str(venv)],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            cmd = [
                uv,
                "pip",
                "install",
                "--python",
                str(python),
                "-c",
                str(CONSTRAINTS),
                *AIRFLOW_REQUIREMENTS,
            ]
        else:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            cmd = [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *AIRFLOW_REQUIREMENTS]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or exc.stdout or "").splitlines()[-15:])
        raise AirflowEnvError(
            f"installing Airflow (python {base_python}) into {venv} failed:\n{tail}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise AirflowEnvError(f"installing Airflow into {venv} timed out after {exc.timeout} s") from exc
    stamp.write_text(_stamp_value())
    return python


def airflow_env(airflow_home: Path, dags_folder: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Airflow commands: isolated AIRFLOW_HOME, SQLite metadata DB, no examples."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    if extra:
        env.update(extra)
    return env
