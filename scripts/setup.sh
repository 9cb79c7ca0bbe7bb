#!/usr/bin/env bash
# Installs everything Swell's demo and tests need on a fresh machine: Debian packages, the Python
# package with its extras, and the local control plane built from Go modules (cached by version).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=".swell-setup.stamp"
# The editable install must point at this checkout (another clone may have installed its own).
here_installed() {
  python3 -c 'import pathlib, sys, swell_worker; sys.exit(0 if pathlib.Path(swell_worker.__file__).resolve().is_relative_to(pathlib.Path("worker").resolve()) else 1)' 2>/dev/null
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! here_installed; then
  echo "setup: pip install -e .[dev]"
  python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

echo "setup: control plane binaries"
tests/tooling/controlplane/build.sh >/dev/null
