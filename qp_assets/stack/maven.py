"""Resolve pinned Maven poms into local jar folders (cached by pom hash).

``resolve_pom(pom, dest)`` runs ``maven-dependency-plugin:3.8.1:copy-dependencies`` once per pom content:
a marker file ``dest/.qp-resolved`` holds the SHA-256 of the pom, so a second call with an unchanged pom
returns immediately without starting Maven (nothing is downloaded). Resolution goes to a temporary sibling
folder that is renamed into place only on success, so a failed or interrupted download never leaves a
half-filled ``dest``. Concurrent callers (several pytest sessions) serialize on a lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qp_assets.stack.errors import StackError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MARKER = ".qp-resolved"


def pom_digest(pom: Path) -> str:
    """SHA-256 hex digest of the pom's bytes (the cache key)."""
    return hashlib.sha256(Path(pom).read_bytes()).hexdigest()


def is_resolved(pom: Path, dest: Path) -> bool:
    """True when ``dest`` holds a complete resolution of this exact pom content."""
    marker = Path(dest) / MARKER
    return marker.is_file() and marker.read_text().strip() == pom_digest(pom)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mvn_executable() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("maven ('mvn') not found on PATH; install the Debian package 'maven'")
    return mvn


def resolve_pom(pom: Path, dest: Path, goal: str = "copy-dependencies", log_file: Path | None = None) -> Path:
    """Resolve the dependencies of ``pom`` into ``dest`` and return ``dest`` (cached by pom hash).

    ``goal`` is a maven-dependency-plugin goal: ``copy-dependencies`` (jars, default) or
    ``unpack-dependencies`` (archives such as a ``tar.gz`` server distribution). Maven's log goes to
    ``log_file`` (default ``<dest>.maven.log``). Raises StackError naming the pom and the log on failure.
    """
    pom = Path(pom).resolve()
    dest = Path(dest).resolve()
    if not pom.is_file():
        raise StackError(f"pom not found: {pom}")
    if is_resolved(pom, dest):
        return dest
    log_file = Path(log_file) if log_file else dest.parent / f"{dest.name}.maven.log"
    with _file_lock(dest.parent / f".{dest.name}.lock"):
        if is_resolved(pom, dest):  # another process finished it while we waited
            return dest
        staging = dest.parent / f".{dest.name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        cmd = [
            _mvn_executable(),
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{DEPENDENCY_PLUGIN}:{goal}",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
            # unpack-dependencies skips archives it has unpacked before unless markers live with the output
            f"-DmarkersDirectory={staging / '.markers'}",
        ]
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            env = dict(
                os.environ,
                MAVEN_OPTS=os.environ.get("MAVEN_OPTS", "-Xmx512m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"),
            )
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=pom.parent, env=env)
        if rc != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise StackError(f"maven failed resolving {pom} (exit {rc}); see {log_file}")
        (staging / MARKER).write_text(pom_digest(pom) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest
