"""A migrated Airflow metadata database for each Airflow test, migrated once per test runtime.

Every test that runs ``airflow dags test`` needs a migrated metadata database in its own AIRFLOW_HOME.
``airflow db migrate`` of an empty SQLite database takes 7.5 s on the idle 2-core VM (5.5 s of it the CLI's
start) and its result depends only on the Airflow installation: the first test migrates a template under
``<runtime>/tmp/`` (keyed by the Airflow venv and its install stamp), the others copy it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from qp_assets.settings import runtime_dir


def migrated_airflow_db(airflow_python: Path, env: dict[str, str]) -> None:
    """Put a migrated metadata database where ``env`` points Airflow (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``,
    the ``sqlite:///<path>`` that :func:`qp_assets.export.airflow_env.airflow_env` sets): a copy of this
    venv's template, made first with ``airflow db migrate`` under ``env`` (AssertionError with its stderr if
    the migration fails)."""
    venv = airflow_python.parent.parent
    stamp = (venv / ".qp-airflow-stamp").read_bytes()  # rewritten by ensure_airflow_venv on every install
    key = hashlib.sha256(str(venv).encode() + b"\n" + stamp).hexdigest()[:16]
    template = runtime_dir() / "tmp" / f"airflow-migrated-{key}.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f"{template.name}.{os.getpid()}")
        migrate = subprocess.run(
            [str(airflow_python.parent / "airflow"), "db", "migrate"],
            env={**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{partial}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        os.replace(partial, template)  # whole or absent: a concurrent first call migrates its own
    shutil.copyfile(template, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
