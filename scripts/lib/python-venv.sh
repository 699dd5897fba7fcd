# Sourced by scripts that need a pinned Python environment.

# ensure_venv DIR REQUIREMENTS: (re)creates the virtual environment DIR from the pinned
# REQUIREMENTS file whenever that file changes; a stamp with its sha256 makes later calls free.
ensure_venv() {
    local venv=$1 requirements=$2 want
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
        echo "installing the Python environment $venv from $requirements (a minute or more, once)" >&2
        python3 -m venv --clear "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" > "$venv/.requirements.sha256"
    fi
}
