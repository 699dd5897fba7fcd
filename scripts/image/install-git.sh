#!/usr/bin/env bash
# Installs git into the image's base (Debian or Ubuntu, as root, before the image's USER):
# `pinserve promote` commits, pushes and compares branches with the git CLI, and the retraining
# pipeline's promote step (k8s/pipelines) runs it in this image. Serving never calls git. The
# package comes from the base's own apt repositories, so a mirror of them serves air-gapped
# builds; apt's lists are removed again so they do not stay in the layer.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends git
rm -rf /var/lib/apt/lists/*
git --version
