#!/usr/bin/env bash
# Set-up and entry point for mcpool's jobs.
#
#   ./run.sh demo       in under a minute: a Flask app on mcpool under load
#                       from many threads, its memcached stopped and started
#                       again, a hostile key, and pylibmc's own pool under the
#                       same load (examples/demo.py)
#   ./run.sh test       lint (ruff), types (mypy --strict), the docs build and
#                       the test suite
#   ./run.sh test-only  the test suite alone (pytest), for trying other
#                       Pythons and pylibmc builds
#
# Arguments after the job go to the demo or to pytest. Each job first installs
# what is missing: the memcached server, the SASL tools and wrk from the system
# packages (apt, as root or through sudo), a virtualenv, and the package with
# its development tools and a pylibmc binding. The demo installs only what it
# runs: memcached, and mcpool with pylibmc and Flask in a virtualenv of its own
# (.venv-demo), showing pip's progress. Variables:
#
#   PYTHON          the interpreter the virtualenv is made from (python3)
#   MCPOOL_PYLIBMC  which distribution provides the module pylibmc: pylibmc
#                   (the default) or pylibmc2, installed as mcpool's extra
#   VENV            the virtualenv's directory (.venv); give each interpreter
#                   and binding one of its own to keep several side by side
#   MCPOOL_CONSTRAINTS
#                   a pip constraints file for the install, such as
#                   .ci/floors.txt (the lowest releases the metadata admits)
#   DEMO_VENV       the demo's virtualenv (.venv-demo)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
MCPOOL_PYLIBMC=${MCPOOL_PYLIBMC:-pylibmc}
VENV=${VENV:-.venv}
DEMO_VENV=${DEMO_VENV:-.venv-demo}
MCPOOL_CONSTRAINTS=${MCPOOL_CONSTRAINTS:-}

case "$MCPOOL_PYLIBMC" in
    pylibmc) OTHER_BINDING=pylibmc2 ;;
    pylibmc2) OTHER_BINDING=pylibmc ;;
    *)
        echo "MCPOOL_PYLIBMC=$MCPOOL_PYLIBMC: expected pylibmc or pylibmc2" >&2
        exit 2
        ;;
esac
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "PYTHON=$PYTHON: no such interpreter; give a command or a path" >&2
    exit 2
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    echo "installing system packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_system_packages() {
    local missing=()
    command -v memcached >/dev/null 2>&1 || missing+=(memcached)
    command -v saslpasswd2 >/dev/null 2>&1 || missing+=(sasl2-bin)
    # The SASL PLAIN plugin, for memcached -S and for the client side.
    compgen -G "/usr/lib/*/sasl2/libplain.so*" >/dev/null || missing+=(libsasl2-modules)
    # The HTTP load generator of benchmarks/bench_serving.py.
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    # pip builds uWSGI (a dev dependency, for the deployment tests) from
    # source against this Python: a C compiler and Python.h.
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

install_pylibmc_build_deps() {
    # pylibmc 1.6.3 ships wheels (libmemcached inside) for some interpreters
    # only: 3.10 and 3.11 on Linux. Ask the index whether one fits this venv's
    # interpreter; when none does, pip builds it from source, which needs
    # libmemcached's and zlib's headers (and libmemcached's libsasl2-dev).
    local py="$VENV/bin/python"
    local missing=()
    [ -e /usr/include/libmemcached/memcached.h ] || missing+=(libmemcached-dev)
    [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
    [ ${#missing[@]} -gt 0 ] || return 0
    if "$py" -m pip install -q --dry-run --ignore-installed --no-deps \
        --only-binary=:all: 'pylibmc>=1.6.3' >/dev/null 2>&1; then
        return 0
    fi
    echo "no pylibmc wheel for $("$py" -V): pip will build it from source"
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    "$py" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    apt_install "${missing[@]}"
}

install_demo_system_packages() {
    local missing=()
    command -v memcached >/dev/null 2>&1 || missing+=(memcached)
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

install_python_packages() {
    # $1: the extras to install mcpool with; $2: pip's verbosity option (-q,
    # or nothing to show its progress).
    local extras=$1 quiet=${2:-}
    # Reinstall only when the package metadata, the interpreter, the binding
    # or the extras changed since the last install into this virtualenv.
    local stamp="$VENV/.mcpool-installed"
    local interpreter want
    interpreter=$("$PYTHON" -c 'import sys; print(sys.base_prefix, sys.version)')
    want=$( { cat pyproject.toml; echo "$interpreter"; echo "$MCPOOL_PYLIBMC"
              echo "$extras"
              [ -z "$MCPOOL_CONSTRAINTS" ] || cat "$MCPOOL_CONSTRAINTS"; } \
        | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ] || [ "$("$VENV/bin/python" -c \
        'import sys; print(sys.base_prefix, sys.version)')" != "$interpreter" ]; then
        echo "making the virtualenv $VENV from $PYTHON"
        "$PYTHON" -m venv --clear "$VENV"
    fi
    local py="$VENV/bin/python"
    "$py" -m pip install -q --upgrade pip
    if [ "$MCPOOL_PYLIBMC" = pylibmc ]; then
        install_pylibmc_build_deps
    fi
    # Both distributions install the same files: the one not wanted goes,
    # and with it the wanted one, whose files it may have overwritten.
    if "$py" -m pip show -q "$OTHER_BINDING" >/dev/null 2>&1; then
        "$py" -m pip uninstall -q -y "$OTHER_BINDING" "$MCPOOL_PYLIBMC"
    fi
    local constraints=()
    [ -z "$MCPOOL_CONSTRAINTS" ] || constraints=(-c "$MCPOOL_CONSTRAINTS")
    [ -n "$quiet" ] || echo "installing mcpool[$extras] into $VENV"
    "$py" -m pip install $quiet -e ".[$extras]" ${constraints[@]+"${constraints[@]}"}
    echo "$want" > "$stamp"
}

run_pytest() {
    local py="$VENV/bin/python"
    # pylibmc's wheel bundles a libsasl2 that looks for its plugins in
    # /usr/lib64/sasl2; point it at the system's (the SASL tests need PLAIN).
    local plugins
    plugins=$(compgen -G "/usr/lib/*/sasl2" | head -n 1 || true)
    if [ -z "${SASL_PATH:-}" ] && [ -n "$plugins" ]; then
        export SASL_PATH="$plugins"
    fi
    echo "== pytest ($("$py" -c 'import sys, pylibmc
print(f"Python {sys.version.split()[0]}, pylibmc {pylibmc.__version__}, "
      f"libmemcached {pylibmc.libmemcached_version}")'))"
    "$py" -m pytest "$@"
}

run_checks() {
    local py="$VENV/bin/python"
    echo "== ruff"
    "$py" -m ruff check .
    "$py" -m ruff format --check .
    echo "== mypy --strict mcpool/ examples/ tests/typing/"
    # tests/typing/usage.py: what applications see of mcpool's types.
    "$py" -m mypy --strict mcpool/ examples/ tests/typing/
    echo "== sphinx (warnings are errors)"
    "$py" -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
}

case "${1:-}" in
    demo)
        shift
        # Only what the demo runs: not the development tools of .venv.
        VENV=$DEMO_VENV
        install_demo_system_packages
        install_python_packages "flask,$MCPOOL_PYLIBMC"
        exec "$VENV/bin/python" examples/demo.py "$@"
        ;;
    test)
        shift
        install_system_packages
        install_python_packages "dev,$MCPOOL_PYLIBMC" -q
        run_checks
        run_pytest "$@"
        ;;
    test-only)
        shift
        install_system_packages
        install_python_packages "dev,$MCPOOL_PYLIBMC" -q
        run_pytest "$@"
        ;;
    *)
        echo "usage: $0 demo|test|test-only [args...]" >&2
        exit 2
        ;;
esac
