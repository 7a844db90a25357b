#!/usr/bin/env bash
# The main job, end to end on the embedded default: set everything up, bring the local stack up,
# submit VQE requests (H2, HeH+, LiH), let the Kafka sensor trigger the VQE runner, wait for the results
# to land in S3, materialize the day's Iceberg feature tables, and print a summary read back from Iceberg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export DAGSTER_HOME=${DAGSTER_HOME:-$(pwd)/.qp/dagster_home}
mkdir -p "$DAGSTER_HOME"
.venv/bin/qp stack up
exec .venv/bin/qp e2e "$@"
