#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: virtual environment, the project and its test tools,
# and the FashionMNIST files. Sourced by scripts/search.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  as_root apt-get install -y -q "$@" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q "$@" >/dev/null; }
}

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3.11 or newer."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$PYTHON" --version 2>&1) is too old; fashion-tune needs Python 3.11 or newer."

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    say "python3 -m venv failed; installing Debian's python3-venv"
    apt_install python3-venv || die "cannot create a virtual environment; install python3-venv."
    "$PYTHON" -m venv "$VENV"
  fi
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing fashion-tune and its dependencies into $VENV (torch is large: minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi

if ! "$VENV/bin/python" -m model.data --no-download >/dev/null 2>&1; then
  say "FashionMNIST is not on disk; installing Debian's dataset-fashion-mnist"
  apt_install dataset-fashion-mnist \
    || say "could not install dataset-fashion-mnist; torchvision's download is tried next"
  # Reports where the data is, downloading it into data/ if no local copy exists.
  "$VENV/bin/python" -m model.data >&2 \
    || say "warning: FashionMNIST is still missing; the search will say how to provide it"
fi
