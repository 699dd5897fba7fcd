#!/usr/bin/env bash
# The retraining loop on one machine, with output a person can follow (k8s/README.md, "The loop
# on one machine"): a real MLflow, Alertmanager, Prometheus and git, the pipeline's steps read
# from k8s/pipelines/workflowtemplate.yaml and run as local processes, the Sensor's filter read
# from k8s/pipelines/sensor.yaml. Exits non-zero if any step did not happen as described.
#
#   scripts/loop-demo.sh [--keep]        (--keep leaves the work folder for a look)
#
# PINSERVE_BINARY=PATH runs that pinserve instead of building the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

# shellcheck source=scripts/lib/packages.sh
source scripts/lib/packages.sh

command -v prometheus >/dev/null || install_packages prometheus
command -v prometheus-alertmanager >/dev/null || install_packages prometheus-alertmanager
scripts/install-onnxruntime.sh >/dev/null
# The demo's processes get a HOME of their own (nothing lands in the user's caches), so they are
# told where the library is.
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-${XDG_DATA_HOME:-$HOME/.local/share}/pinserve/onnxruntime/1.31.1/libonnxruntime.so}
# MLflow (the test services' environment), the example trainer's packages, and PyYAML with
# kubectl's kustomize (the manifest checks' environments).
ensure_venv .venv-services tests/support/requirements.txt
ensure_venv .venv-trainer examples/trainer/requirements.txt
ensure_venv .venv-k8s tests/k8s/requirements.txt
kubectl=${PINSERVE_KUBECTL:-$(command -v kubectl || true)}
if [[ -z $kubectl ]]; then
    ensure_venv .venv-kubectl tests/k8s/kubectl-requirements.txt
    kubectl=$PWD/.venv-kubectl/bin/kubectl
fi
pinserve=${PINSERVE_BINARY:-}
if [[ -z $pinserve ]]; then
    echo "building pinserve (release build: several minutes on two cores the first time)"
    cargo build --release --quiet
    pinserve=$PWD/target/release/pinserve
fi

exec .venv-k8s/bin/python scripts/loop_demo.py --pinserve "$pinserve" \
    --trainer-python "$PWD/.venv-trainer/bin/python" --mlflow "$PWD/.venv-services/bin/mlflow" \
    --kubectl "$kubectl" "$@"
