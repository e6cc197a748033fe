#!/usr/bin/env bash
# Installs the pinned Schemathesis CLI into target/schemathesis-venv, where the
# `schemathesis` end-to-end test (tests/tests/schemathesis.rs) looks for it.
#
# Idempotent and fast when already installed: a stamp file records the pinned version, and
# nothing is downloaded while it matches. Needs python3 with the venv module (and network
# access to PyPI only on the first run or after a version bump).
#
#   scripts/install-schemathesis.sh            # install or confirm
#   SCHEMATHESIS_VENV=/elsewhere scripts/...   # another location (the test reads the same variable)
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"
stamp="$venv/.installed-schemathesis-$SCHEMATHESIS_VERSION"

if [[ -f "$stamp" && -x "$venv/bin/st" ]]; then
    echo "schemathesis $SCHEMATHESIS_VERSION already installed in $venv"
    exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    echo "install-schemathesis: needs $python >= 3.9 with the venv module" >&2
    if command -v apt-get >/dev/null; then
        echo "  (on Debian: apt-get install -y python3 python3-venv)" >&2
    fi
    exit 1
fi

echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"
"$venv/bin/st" --version
touch "$stamp"
