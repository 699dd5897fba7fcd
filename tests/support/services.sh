#!/usr/bin/env bash
# Starts and stops the real services that pinserve's registry tests talk to, all on loopback: an
# MLflow tracking server (also served over HTTPS, with a test CA, by a second process), a third
# with basic auth, a moto S3 server and an Azurite blob server (Microsoft's Azure Storage
# emulator), filled by tests/support/register_models.py.
#
#   tests/support/services.sh start    # then: source target/test-services/env
#   tests/support/services.sh stop
#
# `start` stops whatever an earlier start left running and wipes its state, so every test run
# sees the same registrations. Each service runs in its own session (setsid), so `stop` ends its
# whole process group, MLflow's uvicorn workers included. State, logs (*.log) and pid files live
# in target/test-services/ and are kept after `stop` for a look at what happened; the Python
# environment is .venv-services/, rebuilt whenever tests/support/requirements.txt changes, and
# Azurite (a Node.js package) is in .node-services/, reinstalled whenever
# tests/support/package-lock.json changes.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly STATE=target/test-services
readonly VENV=.venv-services
readonly REQUIREMENTS=tests/support/requirements.txt
readonly NODE_PACKAGES=.node-services
readonly NODE_PACKAGES_SOURCE=tests/support # package.json and package-lock.json
readonly MLFLOW_USERNAME=admin
readonly MLFLOW_PASSWORD=pinserve-test-password
readonly S3_BUCKET=models
# Azurite's one account and its key: the well-known development ones, which every Azure SDK
# (object_store's emulator mode included) also has built in.
readonly AZURE_ACCOUNT=devstoreaccount1
readonly AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
readonly AZURE_CONTAINER=models
readonly START_TIMEOUT_SECONDS=90
readonly STOP_TIMEOUT_SECONDS=10

# MLflow's background job runner is not needed and slows start-up; nothing may phone home.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true ORT_DISABLE_TELEMETRY=1

# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh
# shellcheck source=scripts/lib/node-packages.sh
source scripts/lib/node-packages.sh

# Prints N free loopback ports on one line, all held at once so that they differ.
free_ports() {
    python3 - "$1" <<'EOF'
import socket
import sys

sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
}

# start_service NAME COMMAND...: runs COMMAND in the background in a session of its own, output
# in $STATE/NAME.log. The script has no job control, so setsid does not fork: the pid written to
# $STATE/NAME.pid is also the id of the session and of its process group.
start_service() {
    local name=$1
    shift
    setsid "$@" > "$STATE/$name.log" 2>&1 < /dev/null &
    echo "$!" > "$STATE/$name.pid"
}

fail() {
    local name=$1 message=$2
    echo "services.sh: $name $message; the end of $STATE/$name.log:" >&2
    tail -n 40 "$STATE/$name.log" >&2
    exit 1
}

# tls_certificates DIR: a CA and a certificate for 127.0.0.1 it signed, as PEM files.
tls_certificates() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pinserve test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2> /dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2> /dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2> /dev/null
}

# wait_for NAME URL [CURL OPTION...]: polls URL until it answers 2xx (any HTTP answer at all
# with --no-fail); fails if the service exits first or takes longer than START_TIMEOUT_SECONDS.
wait_for() {
    local name=$1 url=$2 pid deadline=$((SECONDS + START_TIMEOUT_SECONDS))
    shift 2
    pid=$(< "$STATE/$name.pid")
    until curl --silent --fail --output /dev/null --max-time 2 "$@" "$url"; do
        kill -0 "$pid" 2>/dev/null || fail "$name" "exited during start-up"
        ((SECONDS < deadline)) ||
            fail "$name" "did not answer $url within ${START_TIMEOUT_SECONDS}s"
        sleep 0.2
    done
}

# Whether session SID still runs a live (not zombie) process started from $VENV or
# $NODE_PACKAGES: a stale pid file, whose id may belong to someone else by now, never gets a
# signal sent.
running() {
    ps -o stat=,args= -s "$1" |
        awk -v venv="$VENV/bin/" -v node="$NODE_PACKAGES/node_modules/" '
            $1 !~ /^Z/ && (index($0, venv) || index($0, node)) { found = 1 }
            END { exit !found }'
}

stop_services() {
    local pidfile pid deadline
    local -a pids=()
    shopt -s nullglob
    for pidfile in "$STATE"/*.pid; do
        pid=$(< "$pidfile")
        if running "$pid"; then
            kill -TERM -- "-$pid" 2>/dev/null || true # it may have exited since
            pids+=("$pid")
        fi
        rm "$pidfile"
    done
    deadline=$((SECONDS + STOP_TIMEOUT_SECONDS))
    for pid in "${pids[@]}"; do
        while running "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if running "$pid"; then
            echo "services.sh: $pid outlived SIGTERM by ${STOP_TIMEOUT_SECONDS}s; killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
}

start_services() {
    local state ports mlflow_port auth_port s3_port tls_port azure_port
    rm -rf "$STATE"
    mkdir -p "$STATE/mlflow" "$STATE/mlflow-auth" "$STATE/azurite"
    state=$(realpath "$STATE")
    ports=$(free_ports 5)
    read -r mlflow_port auth_port s3_port tls_port azure_port <<< "$ports"

    start_service mlflow "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$mlflow_port" \
        --workers 1 --backend-store-uri "sqlite:///$state/mlflow/mlflow.db" \
        --artifacts-destination "$state/mlflow/artifacts"

    cat > "$STATE/mlflow-auth/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$state/mlflow-auth/auth.db
admin_username = $MLFLOW_USERNAME
admin_password = $MLFLOW_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Without it every request pays a PBKDF2 password check, which made registering take seconds.
auth_cache_ttl_seconds = 600
EOF
    start_service mlflow-auth env MLFLOW_AUTH_CONFIG_PATH="$state/mlflow-auth/basic_auth.ini" \
        MLFLOW_FLASK_SERVER_SECRET_KEY=pinserve-test-secret-key \
        "$VENV/bin/mlflow" server --app-name basic-auth --host 127.0.0.1 --port "$auth_port" \
        --workers 1 --backend-store-uri "sqlite:///$state/mlflow-auth/mlflow.db" \
        --artifacts-destination "$state/mlflow-auth/artifacts"

    start_service s3 "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3_port"

    # Blob service only (queues and tables are not used), no access log, and no telemetry: it
    # would phone home. --skipApiVersionCheck because Azurite refuses an x-ms-version newer than
    # its own (2025-11-05 for 3.35), and azure-storage-blob 12.31 sends 2026-10-06; pinserve's
    # object_store sends 2023-11-03, which it knows.
    start_service azurite "$NODE_PACKAGES/node_modules/.bin/azurite-blob" \
        --blobHost 127.0.0.1 --blobPort "$azure_port" --location "$state/azurite" \
        --silent --disableTelemetry --skipApiVersionCheck
    wait_for mlflow "http://127.0.0.1:$mlflow_port/health"

    # The same registry over HTTPS, with a certificate from a CA of its own: clients must be
    # told to trust it (MLFLOW_TRACKING_SERVER_CERT_PATH) or to skip verification. It starts once
    # the first server has created the database it shares.
    tls_certificates "$state/tls"
    start_service mlflow-tls "$VENV/bin/mlflow" server --host 127.0.0.1 --port "$tls_port" \
        --workers 1 --backend-store-uri "sqlite:///$state/mlflow/mlflow.db" \
        --artifacts-destination "$state/mlflow/artifacts" \
        --uvicorn-opts "--ssl-keyfile $state/tls/server.key --ssl-certfile $state/tls/server.pem"

    wait_for s3 "http://127.0.0.1:$s3_port/moto-api/"
    wait_for mlflow-auth "http://127.0.0.1:$auth_port/health"
    wait_for mlflow-tls "https://127.0.0.1:$tls_port/health" --cacert "$state/tls/ca.pem"
    # Azurite has no health endpoint and answers an unsigned request 403: any answer will do.
    wait_for azurite "http://127.0.0.1:$azure_port/$AZURE_ACCOUNT?comp=list" --no-fail

    local settings=(
        "PINSERVE_TEST_MLFLOW_URI=http://127.0.0.1:$mlflow_port"
        "PINSERVE_TEST_MLFLOW_AUTH_URI=http://127.0.0.1:$auth_port"
        "PINSERVE_TEST_MLFLOW_USERNAME=$MLFLOW_USERNAME"
        "PINSERVE_TEST_MLFLOW_PASSWORD=$MLFLOW_PASSWORD"
        "PINSERVE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
        "PINSERVE_TEST_S3_BUCKET=$S3_BUCKET"
        "PINSERVE_TEST_S3_REGION=us-east-1"
        "PINSERVE_TEST_S3_ACCESS_KEY_ID=testing"
        "PINSERVE_TEST_S3_SECRET_ACCESS_KEY=testing"
        "PINSERVE_TEST_MLFLOW_TLS_URI=https://127.0.0.1:$tls_port"
        "PINSERVE_TEST_MLFLOW_TLS_CA=$state/tls/ca.pem"
        # The blob service's URL without the account: Azurite takes it from the first path
        # segment (object_store's AZURITE_BLOB_STORAGE_URL is this URL).
        "PINSERVE_TEST_AZURE_BLOB_URL=http://127.0.0.1:$azure_port"
        "PINSERVE_TEST_AZURE_ACCOUNT=$AZURE_ACCOUNT"
        "PINSERVE_TEST_AZURE_KEY=$AZURE_KEY"
        "PINSERVE_TEST_AZURE_CONTAINER=$AZURE_CONTAINER"
        "PINSERVE_TEST_SERVICES=$state/registered.json"
        # MLflow itself, for tests that run its scoring server and client (mlflow_scoring.py).
        "PINSERVE_TEST_SERVICES_PYTHON=$PWD/$VENV/bin/python"
    )
    env "${settings[@]}" "$VENV/bin/python" tests/support/register_models.py \
        > "$STATE/register.log" 2>&1 || fail register "failed"
    printf 'export %q\n' "${settings[@]}" > "$STATE/env"
    echo "services.sh: MLflow on port $mlflow_port (basic auth: $auth_port), S3 on $s3_port," \
        "Azure Blob on $azure_port; variables in $STATE/env"
}

case "${1:-}" in
    start)
        ensure_venv "$VENV" "$REQUIREMENTS"
        ensure_node_packages "$NODE_PACKAGES" "$NODE_PACKAGES_SOURCE"
        stop_services
        trap stop_services EXIT # a start that fails half-way leaves nothing running
        start_services
        trap - EXIT
        ;;
    stop)
        stop_services
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
