#!/usr/bin/env bash
# Entrypoint of the VQE runner image (CPU and GPU variants).
#
#   code-server            (default) serve the Dagster code location qp_assets.definitions over gRPC
#                          on 0.0.0.0:4000; the webserver/daemon load it from
#                          workspace.yaml, the K8s run launcher starts runs in this same image.
#   dagster ARGS...        run a Dagster CLI command as given; this is what the K8s run launcher and
#                          k8s_job_executor invoke (`dagster api execute_run|execute_step ...`).
#   qp ARGS...             the platform CLI (e.g. `qp vqe run ...`, `qp request submit ...`).
#   device-info            print the Aer devices this container sees (GPU check) and exit.
#   anything else          exec'd unchanged.
set -euo pipefail

: "${DAGSTER_HOME:=/opt/dagster/home}"
export DAGSTER_HOME
mkdir -p "$DAGSTER_HOME"
if [ ! -f "$DAGSTER_HOME/dagster.yaml" ] && [ -f /opt/qp/dagster.yaml ]; then
  cp /opt/qp/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
fi

device_info() {
  python - <<'PY'
from qiskit_aer import AerSimulator
devices = AerSimulator().available_devices()
print("aer devices:", ", ".join(devices))
PY
}

cmd="${1:-code-server}"
case "$cmd" in
  code-server)
    shift || true
    exec dagster code-server start -h 0.0.0.0 -p 4000 -m qp_assets.definitions "$@"
    ;;
  device-info)
    device_info
    ;;
  *)
    exec "$@"
    ;;
esac
