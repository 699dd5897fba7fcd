# Sourced by scripts that install Debian packages the tests or the demo need.

# install_packages PACKAGE...: apt-get install, as root or through sudo, refreshing the package
# lists only when the first attempt fails.
install_packages() {
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends "$@" ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "$@"; }
}
