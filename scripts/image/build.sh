#!/usr/bin/env bash
# Builds pinserve for the container image and installs the stripped binary as PREFIX/bin/pinserve.
# The Dockerfile runs this script, and scripts/check-image.sh runs it the same way into a directory
# laid out as the image (reusing the release build already in target/ when it is current).
#
#   scripts/image/build.sh cpu|cuda PREFIX
#
# cuda adds the `cuda` feature (ONNX Runtime's CUDA execution provider). The binary is stripped
# here rather than through [profile.release], so the benchmarks' release builds stay as they are.
set -euo pipefail

usage() {
    echo "usage: $0 cpu|cuda PREFIX" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
variant=$1
prefix=$2
case "$variant" in
    cpu) features=() ;;
    cuda) features=(--features cuda) ;;
    *) usage ;;
esac

cd "$(dirname "$0")/../.."
cargo build --release --locked "${features[@]}"
install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/pinserve" "$prefix/bin/pinserve"
strip --strip-all "$prefix/bin/pinserve"
echo "installed pinserve ($variant) in $prefix/bin: $(stat -c %s "$prefix/bin/pinserve") bytes"
