#!/usr/bin/env bash
# The training image's one build step: the pinned Python packages, into the Python that runs
# train.py (the image's own; scripts/check-trainer-image.sh passes a virtual environment's).
set -euo pipefail
cd "$(dirname "$0")"
"${PYTHON:-python3}" -m pip install --no-cache-dir --disable-pip-version-check --quiet \
    -r requirements.txt
