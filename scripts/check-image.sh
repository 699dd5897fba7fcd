#!/usr/bin/env bash
# Checks the container image without a Docker engine (there is none on our machines or in CI):
#  1. lints the Dockerfile with hadolint (pinned, from PyPI);
#  2. checks that the Dockerfile still runs exactly the scripts in scripts/image/ that this check
#     runs, lays their output out where this check does, and that its build context
#     (.dockerignore) holds every file of the package that the release build reads;
#  3. runs those scripts into a temporary root laid out as the image (ROOT/usr/local/bin/pinserve,
#     ROOT/usr/local/lib/libonnxruntime.so ...), then, as the image's user 65532 with an empty
#     environment, fetches a fixture into a "volume" as the init container would, makes the root
#     and the volume read-only and serves it with the Dockerfile's CMD: the library must be found
#     through ../lib, /health must turn 200, an inference must match its golden output, SIGTERM
#     must exit 0, and nothing may be written outside the volume (HOME included: ONNX Runtime
#     records telemetry there unless told not to);
#  4. installs the CUDA variant's library too (its runtime check needs a GPU), which checks that
#     wheel's digest and files, and that its CUDA major version is the Dockerfile's base image's.
# It ends by printing the sizes of what the image adds to its base (README.md, "Container image").
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

ort_version=1.31.1
image_uid=65532

fail() {
    echo "check-image: $*" >&2
    exit 1
}

# --- 1. lint -------------------------------------------------------------------------------------
ensure_venv target/check-image/hadolint scripts/image/requirements-lint.txt
target/check-image/hadolint/bin/hadolint --no-color --failure-threshold style Dockerfile
echo "check-image: hadolint passed"

# --- 2. the Dockerfile runs what this check runs --------------------------------------------------
expect_line() {
    grep -Fxq -- "$1" Dockerfile || fail "Dockerfile no longer has the line: $1"
}
# shellcheck disable=SC2016 # the lines are compared as written, $VARIANT included
{
    expect_line 'RUN scripts/image/build.sh "$VARIANT" /out/usr/local'
    expect_line 'RUN scripts/image/install-onnxruntime.sh "$VARIANT" /out/usr/local'
    expect_line 'RUN --mount=type=bind,source=scripts/image/install-git.sh,target=/tmp/install-git.sh /tmp/install-git.sh'
}
# install-git.sh is the base's package manager at work: it cannot run into a directory, so this
# check only holds it to installing git alone, without recommended packages, leaving no lists.
grep -Fxq 'apt-get install -y -q --no-install-recommends git' scripts/image/install-git.sh &&
    grep -Fxq 'rm -rf /var/lib/apt/lists/*' scripts/image/install-git.sh ||
    fail "scripts/image/install-git.sh must install git alone and remove apt's lists"
[[ $(grep -c '^RUN' Dockerfile) -eq 3 ]] ||
    fail "every RUN in the Dockerfile must be one of the scripts/image/ lines this check runs"
expect_line 'COPY --from=build /out/usr/local/bin/pinserve /usr/local/bin/pinserve'
expect_line 'COPY --from=onnxruntime /out/usr/local/lib/ /usr/local/lib/'
expect_line "USER $image_uid:$image_uid"
expect_line 'ENTRYPOINT ["pinserve"]'
package_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
grep -Fq "org.opencontainers.image.version=\"$package_version\"" Dockerfile ||
    fail "the Dockerfile's org.opencontainers.image.version label is not Cargo.toml's $package_version"
# The CMD the check serves with, as a JSON array.
cmd_json=$(sed -n 's/^CMD //p' Dockerfile)
[[ -n $cmd_json ]] || fail "the Dockerfile has no CMD"

work=$(mktemp -d)
server=""
cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then kill -KILL "$server"; fi
    chmod -R u+w "$work"
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"

# --- 3. the CPU image, laid out in a directory ----------------------------------------------------
root=$work/root
scripts/image/build.sh cpu "$root/usr/local"
scripts/image/install-onnxruntime.sh cpu "$root/usr/local"

# Every package file the build read (rustc's dep-info), plus the manifest's own, is in the context.
python3 - "${CARGO_TARGET_DIR:-target}/release/pinserve.d" <<'EOF' || fail "fix .dockerignore"
import json, os, re, subprocess, sys

patterns = [line.strip() for line in open(".dockerignore")
            if line.strip() and not line.startswith("#")]
if patterns[:1] != ["*"] or not all(p.startswith("!") for p in patterns[1:]):
    sys.exit(".dockerignore must be '*' followed by '!PATH' lines (an allowlist)")
allowed = [p[1:].rstrip("/") for p in patterns[1:]]

root = os.getcwd()
deps = re.split(r"(?<!\\) ", open(sys.argv[1]).read().split(": ", 1)[1].strip())
# Files the build generates itself (build.rs's output, under the target directory) are not
# package files.
target = os.path.abspath(os.environ.get("CARGO_TARGET_DIR", "target")) + "/"
files = {os.path.relpath(d.replace("\\ ", " "), root) for d in deps
         if d.startswith(root + "/") and not d.startswith(target)}
metadata = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"]))
for package in metadata["packages"]:
    files.add(os.path.relpath(package["manifest_path"], root))
    files.update(os.path.relpath(t["src_path"], root) for t in package["targets"]
                 if not set(t["kind"]) & {"test", "example"})
files.add("Cargo.lock")
missing = sorted(f for f in files
                 if not any(f == a or f.startswith(a + "/") for a in allowed))
if missing:
    sys.exit(f"the build reads files that .dockerignore leaves out: {missing}")
EOF

layout=$(cd "$root" && find . -printf '%y %p\n' | sort)
expected_layout="d .
d ./usr
d ./usr/local
d ./usr/local/bin
d ./usr/local/lib
f ./usr/local/bin/pinserve
f ./usr/local/lib/libonnxruntime.so.$ort_version
f ./usr/local/lib/libonnxruntime_providers_shared.so
l ./usr/local/lib/libonnxruntime.so"
[[ $layout == "$expected_layout" ]] || fail "the image's files are not as expected:"$'\n'"$layout"
binary=$root/usr/local/bin/pinserve
if readelf --sections --wide "$binary" | grep -q ' \.symtab '; then
    fail "$binary is not stripped"
fi
# The oldest glibc among the runtime bases is Ubuntu 24.04's (the CUDA image).
newest_glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
[[ $(printf '%s\n' "$newest_glibc" 2.39 | sort -V | tail -n 1) == 2.39 ]] ||
    fail "pinserve needs glibc $newest_glibc, newer than Ubuntu 24.04's 2.39"

# A model repository and a volume the image's user can read; the volume is the user's, as an
# emptyDir is the pod's.
mkdir -p "$work/repository/tabular_mlp/1" "$work/models" "$work/home"
cp models-fixtures/tabular_mlp/1/model.onnx "$work/repository/tabular_mlp/1/"
chmod -R a+rX "$work/repository"
as_image_user=()
if [[ $(id -u) -eq 0 ]]; then
    chown "$image_uid:$image_uid" "$work/models" "$work/home"
    as_image_user=(setpriv --reuid="$image_uid" --regid="$image_uid" --clear-groups)
    serve_uid=$image_uid
else
    serve_uid=$(id -u)
fi
# A writable HOME, as the image's (/tmp) is, so that anything written there is seen below.
clean_env=(env -i PATH=/usr/bin:/bin HOME="$work/home")

"${as_image_user[@]}" "${clean_env[@]}" "$binary" fetch --model-repository "$work/repository" \
    --model-name tabular_mlp --model-version 1 --dest "$work/models"

# The read-only root filesystem, and the volume as the serving container mounts it (readOnly).
chmod -R a-w "$root" "$work/models"
mapfile -t cmd < <(python3 -c 'import json, sys
for arg in json.loads(sys.argv[1]): print(sys.argv[2] if arg == "/models" else arg)' \
    "$cmd_json" "$work/models")
touch "$work/started"
"${as_image_user[@]}" "${clean_env[@]}" "$binary" "${cmd[@]}" \
    --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --log-format json --drain-seconds 1 \
    2> "$work/serve.log" &
server=$!

address=""
health=""
for _ in $(seq 600); do
    kill -0 "$server" 2>/dev/null || fail "pinserve exited early: $(cat "$work/serve.log")"
    if [[ -z $address ]]; then
        address=$(grep -F '"message":"listening"' "$work/serve.log" | grep -F '"protocol":"http"' |
            grep -o '"address":"[^"]*"' | head -n 1 | cut -d'"' -f4 || true)
    fi
    if [[ -n $address ]]; then
        health=$(curl -s -o /dev/null -w '%{http_code}' "http://$address/health" || true)
        [[ $health == 200 ]] && break
    fi
    sleep 0.1
done
[[ $health == 200 ]] || fail "/health did not turn 200 within 60s: $(cat "$work/serve.log")"
grep -Fq "\"library\":\"$root/usr/local/bin/../lib/libonnxruntime.so\"" "$work/serve.log" ||
    fail "pinserve did not load ONNX Runtime from ../lib beside it: $(cat "$work/serve.log")"

python3 - "http://$address" <<'EOF' || fail "inference failed: $(cat "$work/serve.log")"
import json, sys, urllib.request

case = json.load(open("models-fixtures/golden/tabular_mlp.json"))["cases"][0]
request = urllib.request.Request(
    sys.argv[1] + "/v2/models/tabular_mlp/infer", data=json.dumps(case["request"]).encode(),
    headers={"content-type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    assert response.status == 200, response.status
    answer = json.load(response)
for want, got in zip(case["outputs"], answer["outputs"], strict=True):
    assert got["name"] == want["name"] and got["shape"] == want["shape"], (got, want)
    assert all(abs(g - w) <= 1e-5 for g, w in zip(got["data"], want["data"], strict=True)), got
EOF

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[[ $status -eq 0 ]] || fail "pinserve exited $status after SIGTERM: $(cat "$work/serve.log")"
written=$(find /tmp /var/tmp /dev/shm -xdev -newer "$work/started" -user "$serve_uid" \
    ! -path "$work" ! -path "$work/*" 2>/dev/null || true)
written+=$(find "$work/home" -mindepth 1 -printf '\n%p')
[[ -z $written ]] || fail "pinserve wrote outside its volume: $written"
echo "check-image: the CPU image's files serve a model from a read-only root as user $serve_uid"

# --- 4. the CUDA variant's library ----------------------------------------------------------------
if [[ $(uname -m) == x86_64 ]]; then
    cuda_root=$work/cuda
    scripts/image/install-onnxruntime.sh cuda "$cuda_root/usr/local"
    cuda_files=$(cd "$cuda_root/usr/local/lib" && ls)
    [[ $cuda_files == "libonnxruntime.so
libonnxruntime.so.$ort_version
libonnxruntime_providers_cuda.so
libonnxruntime_providers_shared.so" ]] || fail "the CUDA variant's files are not as expected: $cuda_files"
    base_major=$(sed -n 's|^FROM nvidia/cuda:\([0-9]*\)\..*|\1|p' Dockerfile)
    readelf --dynamic "$cuda_root/usr/local/lib/libonnxruntime_providers_cuda.so" |
        grep -Fq "[libcudart.so.$base_major]" ||
        fail "the CUDA provider does not link CUDA $base_major's runtime, the Dockerfile's base"
    cuda_bytes=$(du -sb "$cuda_root" | cut -f1)
    rm -rf "$cuda_root"
    echo "check-image: the CUDA variant's library installs (CUDA $base_major)"
else
    echo "check-image: no CUDA wheel for $(uname -m); the CUDA variant's library was not checked"
fi

echo "check-image: what the image adds to its base (bytes):"
echo "  pinserve, stripped:       $(stat -c %s "$binary")"
echo "  ONNX Runtime (cpu):       $(du -sb "$root/usr/local/lib" | cut -f1)"
if [[ -n ${cuda_bytes:-} ]]; then
    echo "  ONNX Runtime (cuda):      $cuda_bytes"
fi
echo "check-image: passed"
