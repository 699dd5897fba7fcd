#!/usr/bin/env bash
# Installs the peers benches/load.rs measures pinserve against, each in its own pinned virtual
# environment (they pin different FastAPI versions): .venv-peers-fastapi (FastAPI + uvicorn +
# onnxruntime) and .venv-peers-mlserver (Seldon MLServer + onnxruntime). Reruns are free until a
# requirements file changes.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

ensure_venv .venv-peers-fastapi benches/peers/requirements-fastapi.txt
ensure_venv .venv-peers-mlserver benches/peers/requirements-mlserver.txt
