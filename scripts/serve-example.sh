#!/usr/bin/env bash
# Builds pinserve and serves a bundled model from models-fixtures/ (a model repository on disk:
# no registry needed), then, once the model is ready, prints requests to try. Ctrl-C stops it.
#
#   scripts/serve-example.sh [breast_cancer | tabular_mlp | churn_pipeline]   (breast_cancer)
#
# PINSERVE_LISTEN changes the HTTP address (127.0.0.1:8080), PINSERVE_GRPC_LISTEN the gRPC one
# (127.0.0.1:8081).
set -euo pipefail
cd "$(dirname "$0")/.."

model=${1:-breast_cancer}
listen=${PINSERVE_LISTEN:-127.0.0.1:8080}
grpc_listen=${PINSERVE_GRPC_LISTEN:-127.0.0.1:8081}
case $model in
    breast_cancer)
        # The first example of the held-out test split.
        row=$(sed -n 2p models-fixtures/breast_cancer/test.csv | cut -d, -f1-30)
        infer='{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ['$row']}]}'
        predict='{"instances": [['$row']]}'
        ;;
    tabular_mlp)
        row=$(seq -s, 0.1 0.1 3.2)
        infer='{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 32], "data": ['$row']}]}'
        predict='{"instances": [['$row']]}'
        ;;
    churn_pipeline)
        infer='{"inputs": [{"name": "plan", "datatype": "BYTES", "shape": [1, 1], "data": ["premium"]}, {"name": "region", "datatype": "BYTES", "shape": [1, 1], "data": ["eu"]}, {"name": "tenure_months", "datatype": "FP32", "shape": [1, 1], "data": [3]}, {"name": "monthly_charges", "datatype": "FP32", "shape": [1, 1], "data": [99.5]}]}'
        predict='{"instances": [{"plan": ["premium"], "region": ["eu"], "tenure_months": [3], "monthly_charges": [99.5]}]}'
        ;;
    *)
        echo "usage: $0 [breast_cancer | tabular_mlp | churn_pipeline]" >&2
        exit 2
        ;;
esac

scripts/install-onnxruntime.sh
echo "building pinserve (release build: several minutes on two cores the first time)"
cargo build --release

# Prints the requests once the model is ready; gives up if the server goes away first. After the
# exec below, $$ is the server's own process id.
(
    until curl -sf -o /dev/null "http://$listen/health"; do
        kill -0 $$ 2>/dev/null || exit 0
        sleep 0.2
    done
    cat <<MESSAGE

pinserve is serving $model version 1 on http://$listen (and KServe V2 gRPC on $grpc_listen).
In another terminal, try:

  curl -s http://$listen/health
  curl -s http://$listen/v2/models/$model
  curl -s -X POST http://$listen/v2/models/$model/infer -H 'content-type: application/json' \\
    -d '$infer'
  curl -s -X POST http://$listen/predict -H 'content-type: application/json' \\
    -d '$predict'

Ctrl-C stops it. PINSERVE_LISTEN=ADDRESS:PORT serves on another address
(PINSERVE_GRPC_LISTEN for gRPC, or none).

MESSAGE
) &
exec target/release/pinserve serve --model-repository models-fixtures \
    --model "$model" --version 1 --listen "$listen" --grpc-listen "$grpc_listen" --drain-seconds 0
