#!/usr/bin/env bash
# Runs pinserve's whole test suite, on a fresh machine too: installs what the tests need (the
# ONNX Runtime library, the pinned Python environments that generate fixtures and hold Triton's
# HTTP client, promtool, amtool), checks both container images (pinserve's and the example
# trainer's), builds the compute-heavy fixture, starts the model registries the
# registry tests talk to (MLflow, S3 and Azure Blob on loopback, see tests/support/services.sh;
# stopped on exit), then runs the unit, integration and property tests, and the device test again
# with the `cuda` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/packages.sh
source scripts/lib/packages.sh

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

scripts/install-onnxruntime.sh
scripts/check-image.sh
scripts/check-trainer-image.sh
ensure_venv .venv models-fixtures/requirements.txt
ensure_venv .venv-clients tests/clients/requirements.txt
export PINSERVE_TEST_CLIENT_PYTHON="$PWD/.venv-clients/bin/python"
# OpenSSF's model_signing, which signs the models tests/signing.rs verifies.
ensure_venv .venv-signing tests/support/signing-requirements.txt
# The k8s/ manifests' validators; kubectl (for its kustomize) from PyPI where the machine lacks it;
# Argo's strict CRD schemas from the shared copy beside the repository, else the vendored one.
ensure_venv .venv-k8s tests/k8s/requirements.txt
if ! command -v kubectl >/dev/null; then
    ensure_venv .venv-kubectl tests/k8s/kubectl-requirements.txt
    export PINSERVE_KUBECTL="$PWD/.venv-kubectl/bin/kubectl"
fi
if [[ -d ../shared/schemas/jsonschema-strict ]]; then
    export PINSERVE_ARGO_SCHEMAS="${PINSERVE_ARGO_SCHEMAS:-$PWD/../shared/schemas}"
else
    export PINSERVE_ARGO_SCHEMAS="${PINSERVE_ARGO_SCHEMAS:-$PWD/tests/k8s/argo-schemas}"
fi
# ONNX Runtime's Python package would otherwise record telemetry under ~/.cache/Microsoft.
export ORT_DISABLE_TELEMETRY=1
.venv/bin/python models-fixtures/generate.py --only compute_mlp
{ command -v promtool && command -v prometheus; } >/dev/null || install_packages prometheus
# amtool checks the Alertmanager configuration in k8s/monitoring (tests/pipeline_manifests.rs).
command -v amtool >/dev/null || install_packages prometheus-alertmanager
trap 'tests/support/services.sh stop' EXIT
tests/support/services.sh start
# shellcheck source=/dev/null
source target/test-services/env

if cargo nextest --version >/dev/null 2>&1; then
    run_tests=(cargo nextest run --no-fail-fast)
else
    run_tests=(cargo test --no-fail-fast)
fi
# The pinserve processes the tests start get a HOME of their own, without ORT_DISABLE_TELEMETRY,
# and must turn ONNX Runtime's telemetry off by themselves (tests/privacy.rs); test binaries that
# load ONNX Runtime in-process get it from .cargo/config.toml. Nothing may appear in the
# developer's own caches.
unset ORT_DISABLE_TELEMETRY
real_caches=("${XDG_CACHE_HOME:-$HOME/.cache}/pinserve" "$HOME/.cache/Microsoft")
before_tests=$(mktemp)
echo "building and running the tests"
"${run_tests[@]}"
"${run_tests[@]}" --features cuda --test device
written=$(find "${real_caches[@]}" -newer "$before_tests" 2>/dev/null || true)
rm -f "$before_tests"
if [[ -n $written ]]; then
    echo "the tests wrote into the real caches (every test must use a temporary HOME or cache):" >&2
    echo "$written" >&2
    exit 1
fi
