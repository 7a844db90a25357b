#!/usr/bin/env bash
# Sets up everything the platform needs on a fresh Debian machine, idempotently:
# Debian packages, the Python virtualenv (pinned by constraints.txt), and every JVM dependency
# (Kafka, Connect + sink plugin, Apicurio registry, Spark jars), cached under .qp/ and ~/.m2.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (PushGateway, Prometheus; Java and Maven are expected from the base image but
#    installed here when missing).
need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need_apt+=(prometheus-pushgateway)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # browser tests of the Dagster UI
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# 2. Python environment (uv for speed; its download cache makes repeat runs quick).
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  "$PY" -m pip install -q --disable-pip-version-check uv
fi
UV=$(command -v uv || echo "$PY -m uv")
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  $UV venv -q .venv --python "$PY"
fi
EXTRAS=${QP_EXTRAS:-cpu,dev,noise}
log "installing qp-assets[$EXTRAS] (pinned by constraints.txt)"
$UV pip install -q --compile-bytecode --python .venv/bin/python -c constraints.txt -e ".[$EXTRAS]"
# uv keeps a new 1.3 GB build of pyspark's sdist in its cache at every install into a new venv (68 of them,
# 58 GB, filled this VM's disk and failed CI's S3 writes); prune what no install refers to any more.
$UV cache prune -q || log "uv cache prune failed (the install is done; only the cache stays large)"

# The venv's activate script points DAGSTER_HOME at the project's runtime dir, so `dagster dev` after
# `source .venv/bin/activate` uses the instance that `qp stack up` prepares (dagster.yaml: queue, pools).
if ! grep -q "QP_DAGSTER_HOME_DEFAULT" .venv/bin/activate; then
  cat >>.venv/bin/activate <<EOF
# QP_DAGSTER_HOME_DEFAULT (added by scripts/setup.sh)
export DAGSTER_HOME="\${DAGSTER_HOME:-\${QP_HOME:-$ROOT/.qp}/dagster_home}"
EOF
fi

# The VQE kernels are numba-compiled into qp_assets/vqe/__pycache__ (not in git): compile them here once per
# checkout (about 4-8 s here) instead of inside the first request a user submits.
if ! ls qp_assets/vqe/__pycache__/sector_kernel.*.nbi >/dev/null 2>&1; then
  log "compiling the VQE kernels (numba cache, once per checkout)"
  for ansatz in uccsd adapt; do
    .venv/bin/qp vqe run -m H2 --ansatz $ansatz --no-progress --no-monitor >/dev/null 2>&1 ||
      { log "compiling the VQE kernels failed: 'qp vqe run -m H2 --ansatz $ansatz' says why"; exit 1; }
  done
fi

# 3. JVM dependencies and Debian-packaged services for the local stack (cached; second run downloads nothing).
log "resolving JVM dependencies (cached under .qp/lib and ~/.m2)"
.venv/bin/qp stack fetch
.venv/bin/qp features jars >/dev/null
log "setup complete: activate with 'source $ROOT/.venv/bin/activate'"
