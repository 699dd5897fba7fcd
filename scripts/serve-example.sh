#!/usr/bin/env bash
# Builds pinserve and serves the bundled breast-cancer classifier from models-fixtures/ (a model
# repository on disk: no registry needed). PINSERVE_LISTEN changes the address (127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-onnxruntime.sh
cargo build --release

listen=${PINSERVE_LISTEN:-127.0.0.1:8080}
row=$(sed -n 2p models-fixtures/breast_cancer/test.csv | cut -d, -f1-30)
cat <<MESSAGE

Serving breast_cancer version 1 on http://$listen. In another terminal, try:

  curl -s http://$listen/health
  curl -s http://$listen/v2/models/breast_cancer
  curl -s -X POST http://$listen/v2/models/breast_cancer/infer -H 'content-type: application/json' \\
    -d '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [$row]}]}'
  curl -s -X POST http://$listen/predict -H 'content-type: application/json' \\
    -d '{"instances": [[$row]]}'

MESSAGE
exec target/release/pinserve serve --model-repository models-fixtures \
    --model breast_cancer --version 1 --listen "$listen"
