#!/usr/bin/env bash
# Installs ONNX Runtime's shared library for the container image into PREFIX/lib, where pinserve
# finds it without any variable: the binary sits in PREFIX/bin and searches ../lib beside itself
# (src/model/runtime.rs). The Dockerfile runs this script, and scripts/check-image.sh runs it the
# same way into a directory laid out as the image.
#
#   scripts/image/install-onnxruntime.sh cpu|cuda PREFIX
#
# The library comes from ONNX Runtime's PyPI wheel (onnxruntime, or onnxruntime-gpu for cuda,
# built for CUDA 13 and cuDNN 9), fetched with pip so a PyPI mirror serves air-gapped builds too.
# The wheel's SHA-256 is pinned here: a different file is refused, whatever the index says.
set -euo pipefail

version=1.31.1

usage() {
    echo "usage: $0 cpu|cuda PREFIX" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
variant=$1
prefix=$2

# The libraries taken from the wheel's onnxruntime/capi/; the Python extension module stays
# behind, and so does the TensorRT provider, which pinserve does not register.
files=("libonnxruntime.so.$version" libonnxruntime_providers_shared.so)
case "$variant/$(uname -m)" in
    cpu/x86_64)
        package=onnxruntime platform=manylinux_2_28_x86_64
        sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f ;;
    cpu/aarch64)
        package=onnxruntime platform=manylinux_2_28_aarch64
        sha256=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3 ;;
    cuda/x86_64)
        package=onnxruntime-gpu platform=manylinux_2_28_x86_64
        sha256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
        files+=(libonnxruntime_providers_cuda.so) ;;
    cpu/* | cuda/*)
        echo "no $variant wheel of ONNX Runtime $version for $(uname -m)" >&2
        exit 1 ;;
    *) usage ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading $package==$version ($platform) with pip"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform "$platform" --dest "$work" "$package==$version"
wheels=("$work"/*.whl)
[[ ${#wheels[@]} -eq 1 && -f ${wheels[0]} ]] || { echo "pip did not download one wheel" >&2; exit 1; }
if ! echo "$sha256  ${wheels[0]}" | sha256sum --check --quiet --status; then
    echo "$(basename "${wheels[0]}") does not have the pinned SHA-256 $sha256:" \
        "$(sha256sum "${wheels[0]}" | cut -d' ' -f1)" >&2
    exit 1
fi
python3 -m zipfile -e "${wheels[0]}" "$work/wheel"

mkdir -p "$prefix/lib"
for file in "${files[@]}"; do
    install -m 0644 "$work/wheel/onnxruntime/capi/$file" "$prefix/lib/$file"
done
ln -sf "libonnxruntime.so.$version" "$prefix/lib/libonnxruntime.so"
echo "installed ONNX Runtime $version ($package) in $prefix/lib: ${files[*]}"
