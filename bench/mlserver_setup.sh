#!/usr/bin/env bash
# Build the MLServer baseline used by bench/serve_bench.py: its own virtualenv and two model
# repositories serving the churn model.txt with MLServer's LightGBM runtime.
#
#   bench/mlserver_setup.sh [MODELS_DIR]        (default: models; e.g. /tmp/bench-models)
#
# Creates, under var/bench/ (git-ignored):
#   mlserver-venv/            mlserver==1.7.1, mlserver-lightgbm==1.7.1, uvloop<0.22
#   mlserver-inproc/          settings.json with parallel_workers=0 (inference in the server process)
#   mlserver-default/         settings.json with MLServer's default worker pool
# each holding churn/model-settings.json and a copy of the churn model.txt.
# Re-running refreshes the repositories (the model may have changed) and reuses the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS_DIR="${1:-models}"
PYTHON="${PYTHON:-python3.11}"
BENCH_DIR="var/bench"
VENV="$BENCH_DIR/mlserver-venv"

churn_dir="$(find "$MODELS_DIR/churn" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort -V | tail -n1)"
if [[ -z "$churn_dir" || ! -f "$churn_dir/model.txt" ]]; then
  echo "no churn model under $MODELS_DIR/churn/<version>/model.txt" >&2
  exit 2
fi

mkdir -p "$BENCH_DIR"
if [[ ! -x "$VENV/bin/mlserver" ]]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "mlserver==1.7.1" "mlserver-lightgbm==1.7.1" "uvloop<0.22"
fi

# $1 repository folder, $2 HTTP port, $3 gRPC port, $4 metrics port,
# $5 extra settings.json members (JSON text). debug=false: no per-request access log (as ours).
write_repository() {
  local repo="$1" http_port="$2" grpc_port="$3" metrics_port="$4" extra="$5"
  rm -rf "$repo"
  mkdir -p "$repo/churn"
  cp "$churn_dir/model.txt" "$repo/churn/model.txt"
  cat >"$repo/settings.json" <<JSON
{
  "host": "127.0.0.1",
  "http_port": $http_port,
  "grpc_port": $grpc_port,
  "metrics_port": $metrics_port,
  "debug": false${extra}
}
JSON
  cat >"$repo/churn/model-settings.json" <<JSON
{
  "name": "churn",
  "implementation": "mlserver_lightgbm.LightGBMModel",
  "parameters": {"uri": "./model.txt", "version": "$(basename "$churn_dir")"}
}
JSON
}

write_repository "$BENCH_DIR/mlserver-inproc" 8081 8091 8071 $',\n  "parallel_workers": 0'
write_repository "$BENCH_DIR/mlserver-default" 8082 8092 8072 ""

echo "MLServer $("$VENV/bin/pip" show mlserver | sed -n 's/^Version: //p') in $VENV;" \
  "churn model from $churn_dir; repositories in $BENCH_DIR/mlserver-{inproc,default}"
