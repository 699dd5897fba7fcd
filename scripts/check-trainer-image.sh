#!/usr/bin/env bash
# Checks the example training image (examples/trainer) without a Docker engine, as
# scripts/check-image.sh checks pinserve's: lints its Dockerfile with hadolint; checks that the
# Dockerfile still runs exactly install.sh and copies exactly what this check runs; runs install.sh
# into a virtual environment standing for the image's Python; then trains with train.py as the
# pipeline's `train` step would, and checks the files the step must leave.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

fail() {
    echo "check-trainer-image: $*" >&2
    exit 1
}

ensure_venv target/check-image/hadolint scripts/image/requirements-lint.txt
target/check-image/hadolint/bin/hadolint --no-color --failure-threshold style examples/trainer/Dockerfile
echo "check-trainer-image: hadolint passed"

dockerfile=examples/trainer/Dockerfile
for line in 'COPY requirements.txt install.sh ./' 'RUN ./install.sh' 'COPY train.py ./' \
    'ENTRYPOINT ["python3", "/trainer/train.py"]'; do
    grep -Fxq -- "$line" "$dockerfile" || fail "$dockerfile no longer has the line: $line"
done
[[ $(grep -c '^RUN' "$dockerfile") -eq 1 ]] || fail "the one RUN must be install.sh"

# The image's Python is 3.12; the same pinned wheels exist for the machine's Python.
venv=target/check-trainer/venv
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
PYTHON="$PWD/$venv/bin/python" examples/trainer/install.sh
# ONNX Runtime's Python package would otherwise record telemetry under ~/.cache/Microsoft.
export ORT_DISABLE_TELEMETRY=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" examples/trainer/train.py --data sklearn:breast_cancer --out "$out"
for file in model.onnx train.csv test.csv; do
    [[ -s $out/$file ]] || fail "train.py left no $file"
done
[[ $(head -n 1 "$out/test.csv") == *,target ]] || fail "test.csv has no target column last"
echo "check-trainer-image: passed"
