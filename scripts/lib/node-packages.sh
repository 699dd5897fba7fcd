# Sourced by scripts that need pinned Node.js packages.

# ensure_node_packages DIR SOURCE: (re)installs into DIR/node_modules exactly what
# SOURCE/package-lock.json pins (SOURCE holds the committed package.json beside it) whenever
# either file or the Node.js version changes; a stamp with their sha256 makes later calls free.
# `npm ci` reads both files from its prefix, so they are copied into DIR first. --engine-strict
# turns a Node.js too old for a pinned package into an install error, not a crash at run time;
# none of the pinned packages has an install script, and none is run.
ensure_node_packages() {
    local dir=$1 source=$2 want
    want=$( (cat "$source/package.json" "$source/package-lock.json"; node --version) |
        sha256sum | cut -d' ' -f1)
    if [[ "$(cat "$dir/.packages.sha256" 2>/dev/null)" != "$want" ]]; then
        mkdir -p "$dir"
        rm -f "$dir/.packages.sha256"
        cp "$source/package.json" "$source/package-lock.json" "$dir/"
        npm ci --prefix "$dir" --engine-strict --ignore-scripts --no-audit --no-fund \
            --loglevel=error > /dev/null
        echo "$want" > "$dir/.packages.sha256"
    fi
}
