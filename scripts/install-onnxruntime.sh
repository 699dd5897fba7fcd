#!/usr/bin/env bash
# Installs libonnxruntime where pinserve looks for it by default:
#   ${XDG_DATA_HOME:-~/.local/share}/pinserve/onnxruntime/<version>/
# (or the directory given as the first argument).
#
# The library comes from ONNX Runtime's PyPI wheel: pip reaches PyPI or the mirror it is
# configured with, which works on air-gapped networks where GitHub release downloads do not.
# PINSERVE_ONNXRUNTIME_PACKAGE=onnxruntime-gpu installs the CUDA 13 build instead.
set -euo pipefail

version=1.31.1
package=${PINSERVE_ONNXRUNTIME_PACKAGE:-onnxruntime}
dest=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/pinserve/onnxruntime/$version}

if [[ -f "$dest/libonnxruntime.so" && "$(cat "$dest/PACKAGE" 2>/dev/null)" == "$package==$version" ]]; then
    echo "ONNX Runtime $version ($package) is already installed in $dest"
    exit 0
fi

case "$package" in
    onnxruntime) variant=cpu ;;
    onnxruntime-gpu) variant=cuda ;;
    *) echo "PINSERVE_ONNXRUNTIME_PACKAGE must be onnxruntime or onnxruntime-gpu" >&2; exit 2 ;;
esac

# The container image's installer does the work (pinned wheel hashes, the files pinserve needs);
# here its lib/ goes where pinserve looks by default.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$(dirname "$0")/image/install-onnxruntime.sh" "$variant" "$work"
mkdir -p "$dest"
cp -P "$work"/lib/* "$dest/"
echo "$package==$version" > "$dest/PACKAGE"
echo "installed ONNX Runtime $version ($package) in $dest"
