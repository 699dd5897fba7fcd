#!/usr/bin/env bash
# Runs pinserve's whole test suite, on a fresh machine too: installs what the tests need (the
# ONNX Runtime library, the pinned Python environment that generates fixtures, promtool), builds
# the compute-heavy fixture, starts the model registries the registry tests talk to (MLflow and
# S3 on loopback, see tests/support/services.sh; stopped on exit), then runs the unit,
# integration and property tests, and the device test again with the `cuda` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

install_packages() {
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "$@" ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "$@"; }
}

python_environment() {
    local want
    want=$(sha256sum models-fixtures/requirements.txt | cut -d' ' -f1)
    if [[ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -r models-fixtures/requirements.txt
        echo "$want" > .venv/.requirements.sha256
    fi
}

scripts/install-onnxruntime.sh
python_environment
.venv/bin/python models-fixtures/generate.py --only compute_mlp
command -v promtool >/dev/null || install_packages prometheus
trap 'tests/support/services.sh stop' EXIT
tests/support/services.sh start
# shellcheck source=/dev/null
source target/test-services/env

if cargo nextest --version >/dev/null 2>&1; then
    run_tests=(cargo nextest run --no-fail-fast)
else
    run_tests=(cargo test --no-fail-fast)
fi
"${run_tests[@]}"
"${run_tests[@]}" --features cuda --test device
