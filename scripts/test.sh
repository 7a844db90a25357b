#!/usr/bin/env bash
# Sets everything up, starts the local stack, and runs the whole test suite against the real services
# (pytest, plus the Java sink plugin's own unit tests). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not services"` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DAGSTER_HOME=${DAGSTER_HOME:-$(pwd)/.qp/dagster_home}
mkdir -p "$DAGSTER_HOME"

status=0
if [ -f infra/connect/s3-avro-sink/pom.xml ]; then
  echo "[test] Java unit tests of the S3 Avro sink plugin"
  (cd infra/connect/s3-avro-sink && mvn -B -q test) || status=1
fi

echo "[test] ruff"
.venv/bin/ruff check . || status=1
.venv/bin/ruff format --check . || status=1

echo "[test] dagster definitions validate"
.venv/bin/dagster definitions validate -m qp_assets.definitions || status=1

echo "[test] starting the local stack"
.venv/bin/qp stack up
trap '.venv/bin/qp stack down >/dev/null 2>&1 || true' EXIT

echo "[test] pytest"
.venv/bin/python -m pytest -p no:cacheprovider --timeout=900 "$@" || status=$?
exit $status
