#!/usr/bin/env bash
# Installs libonnxruntime where pinserve looks for it by default:
#   ${XDG_DATA_HOME:-~/.local/share}/pinserve/onnxruntime/<version>/
# (or the directory given as the first argument, e.g. /usr/local/lib for an image).
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

case "$(uname -m)" in
    x86_64) platform=manylinux_2_28_x86_64 ;;
    aarch64) platform=manylinux_2_28_aarch64 ;;
    *) echo "no $package wheel for $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading $package==$version ($platform) with pip"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform "$platform" --dest "$work" "$package==$version"
python3 -m zipfile -e "$work"/*.whl "$work/wheel"

mkdir -p "$dest"
# The runtime and its provider libraries; the Python extension module stays behind.
find "$work/wheel/onnxruntime/capi" -maxdepth 1 -name 'lib*.so*' -exec cp {} "$dest/" \;
ln -sf "libonnxruntime.so.$version" "$dest/libonnxruntime.so"
echo "$package==$version" > "$dest/PACKAGE"
echo "installed ONNX Runtime $version ($package) in $dest"
