#!/usr/bin/env bash
# Sets everything up, starts the suite's own local stack, and runs the whole test suite against the real
# services (pytest, plus the Java sink plugin's own unit tests). Extra arguments go to pytest,
# e.g. `scripts/test.sh -k sensor`. `scripts/test.sh --fast` is the fast tier: no service is started and
# only the tests that need none and are quick run (pytest -m "not services and not spark and not slow"),
# after the same static checks.
#
# The suite never touches the user's stack or data: it runs in its own runtime directory
# (QP_TEST_HOME, default .qp-test/, wiped at the start of every run so each run starts from empty
# state; the resolved jars are shared with .qp/lib) with every port shifted by QP_TEST_PORT_OFFSET
# (default 20000: Kafka 29092, registry 28081, Connect 28083, S3 28333, ...). Endpoint variables of the
# user's environment are ignored for the same reason.
#
# The tests that need no service (the fast tier) run first, on every core (pytest-xdist, -n auto), before
# the stack starts; then the rest run one at a time against the stack (they share its services, and some
# stop or kill them). Both phases print their slowest tests: the CI budget is 30 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
FAST=0
if [ "${1:-}" = "--fast" ]; then
  FAST=1
  shift
fi
scripts/setup.sh
USER_LIB=${QP_HOME:-$ROOT/.qp}/lib

unset KAFKA_BOOTSTRAP_SERVERS SCHEMA_REGISTRY_URL KAFKA_CONNECT_URL S3_ENDPOINT_URL PUSHGATEWAY_URL \
  PROMETHEUS_URL ICEBERG_CATALOG_URI ICEBERG_WAREHOUSE ICEBERG_CATALOG_NAME SPARK_MASTER QP_BUCKET \
  QP_KAFKA_CONTROLLER_PORT QP_REGISTRY_MANAGEMENT_PORT QP_SEAWEEDFS_PORT_OFFSET DAGSTER_HOME \
  SPARK_CONNECT_URL QP_SPARK_CONNECT
export QP_HOME=${QP_TEST_HOME:-$ROOT/.qp-test}
export QP_PORT_OFFSET=${QP_TEST_PORT_OFFSET:-20000}
export DAGSTER_HOME=$QP_HOME/dagster_home

echo "[test] fresh runtime $QP_HOME (ports +$QP_PORT_OFFSET)"
.venv/bin/qp stack down >/dev/null 2>&1 || true
if [ -d "$QP_HOME" ]; then
  find "$QP_HOME" -mindepth 1 -maxdepth 1 ! -name lib -exec rm -rf {} +
fi
mkdir -p "$QP_HOME" "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
[ -e "$QP_HOME/lib" ] || ln -s "$USER_LIB" "$QP_HOME/lib"

status=0
if [ "$FAST" = 0 ] && [ -f infra/connect/s3-avro-sink/pom.xml ]; then
  echo "[test] Java unit tests of the S3 Avro sink plugin"
  (cd infra/connect/s3-avro-sink && mvn -B -q test) || status=1
fi

echo "[test] ruff"
.venv/bin/ruff check . || status=1
.venv/bin/ruff format --check . || status=1

echo "[test] import layering (lint-imports, contracts in pyproject.toml)"
.venv/bin/lint-imports || status=1

echo "[test] dagster definitions validate"
.venv/bin/dagster definitions validate -m qp_assets.definitions || status=1

# pytest exits 5 when a phase selects no test (e.g. `-k` matching only the other phase's tests)
phase() { "$@" || { rc=$?; [ "$rc" = 5 ] || status=$rc; }; }

echo "[test] pytest, fast tier (no services, every core)"
phase .venv/bin/python -m pytest -p no:cacheprovider --timeout=300 -n auto --durations=10 \
  -m "not services and not spark and not slow" "$@"
if [ "$FAST" = 1 ]; then
  exit $status
fi

echo "[test] starting the suite's stack"
# set first: a stack up that fails half-way still stops what it started
trap '.venv/bin/qp stack down >/dev/null 2>&1 || true' EXIT
.venv/bin/qp stack up

echo "[test] pytest, the tests that need the stack (one at a time)"
stack_rc=0
.venv/bin/python -m pytest -p no:cacheprovider --timeout=900 --durations=25 \
  -m "services or spark or slow" "$@" || stack_rc=$?
[ "$stack_rc" = 0 ] || [ "$stack_rc" = 5 ] || status=$stack_rc
if [ "$stack_rc" != 0 ] && [ "$stack_rc" != 5 ]; then
  # printed last, so that a CI log cut to its tail still shows the state the failures left behind
  scripts/diagnose.sh || true
fi
exit $status
