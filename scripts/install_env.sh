#!/usr/bin/env bash
# Usage: scripts/install_env.sh VENV_DIR CHECK_IMPORT PIP_ARGS...
# Creates VENV_DIR (if missing) and pip-installs PIP_ARGS into it, printing pip's lines prefixed with the
# environment's name (two environments install side by side) and a line every 15 s while pip is silent
# (unpacking torch takes minutes). CHECK_IMPORT is a Python statement that must succeed afterwards.
set -euo pipefail
venv=$1 check=$2
shift 2
name=$(basename "$venv")
start=$SECONDS
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
stamp=$(mktemp)
( while sleep 15 </dev/null >/dev/null 2>&1; do
    if [ $(( $(date +%s) - $(stat -c %Y "$stamp") )) -ge 14 ]; then
        echo "[$name] still installing ($(( SECONDS - start )) s)"
    fi
  done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null; rm -f "$stamp"' EXIT
"$venv/bin/pip" install --disable-pip-version-check "$@" 2>&1 \
    | { grep --line-buffered -v -e "^WARNING: Location" -e "^Requirement already satisfied" -e "^  Using cached" \
        -e "^  Downloading" -e "^     " -e "^  Preparing" -e "^  Getting requirements" -e "^  Installing" \
        -e "^  Building" -e "^  Created wheel" -e "^  Stored in" -e "^Building wheels" -e "^$" || true; } \
    | while IFS= read -r line; do touch "$stamp"; echo "[$name] $line"; done
"$venv/bin/python" -c "$check"
echo "[$name] ready in $(( SECONDS - start )) s ($(du -sh "$venv" | cut -f1))"
