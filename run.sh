#!/usr/bin/env bash
# Set-up and entry point for mcpool's two jobs.
#
#   ./run.sh demo   start a local memcached, serve an example app on the pool,
#                   drive requests through it from many threads, print stats
#   ./run.sh test   lint (ruff), types (mypy --strict), and the test suite
#
# Each job first installs what is missing: the memcached server, the SASL
# tools and wrk from the system packages (apt, as root or through sudo), a
# virtualenv in .venv, and the package with its development tools.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
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
        echo "installing system packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

install_python_packages() {
    # Reinstall only when the package metadata changed since the last install.
    local stamp="$VENV/.mcpool-installed"
    local want
    want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e '.[dev]'
        echo "$want" > "$stamp"
    fi
}

run_tests() {
    local py="$VENV/bin/python"
    # pylibmc's wheel bundles a libsasl2 that looks for its plugins in
    # /usr/lib64/sasl2; point it at the system's (the SASL tests need PLAIN).
    local plugins
    plugins=$(compgen -G "/usr/lib/*/sasl2" | head -n 1 || true)
    if [ -z "${SASL_PATH:-}" ] && [ -n "$plugins" ]; then
        export SASL_PATH="$plugins"
    fi
    echo "== ruff"
    "$py" -m ruff check .
    "$py" -m ruff format --check .
    echo "== mypy --strict mcpool/"
    "$py" -m mypy --strict mcpool/
    echo "== sphinx (warnings are errors)"
    "$py" -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
    echo "== pytest"
    "$py" -m pytest "$@"
}

case "${1:-}" in
    demo)
        shift
        install_system_packages
        install_python_packages
        exec "$VENV/bin/python" examples/demo.py "$@"
        ;;
    test)
        shift
        install_system_packages
        install_python_packages
        run_tests "$@"
        ;;
    *)
        echo "usage: $0 demo|test [args...]" >&2
        exit 2
        ;;
esac
