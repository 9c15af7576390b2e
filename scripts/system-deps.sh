#!/usr/bin/env bash
# Installs the Debian packages the tests use (not the demo), when missing.
set -euo pipefail
# dataset-fashion-mnist: test data; chromium + chromium-driver: tests/test_browser.py (headless, Selenium);
# postgresql-15: Label Studio on PostgreSQL (tests/test_postgres_e2e.py, scripts/pg_cluster.py starts throw-away
# clusters from /usr/lib/postgresql/15/bin; the tests never use a cluster the package may have created).
pkgs=(dataset-fashion-mnist chromium chromium-driver postgresql-15)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages for the tests (root): ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1
