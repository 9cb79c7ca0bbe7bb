#!/usr/bin/env bash
# Runs the whole suite. pytest's exit 5 (no tests collected) is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check . || exit 1
ruff format --check . || exit 1
mypy || exit 1
lint-imports || exit 1
python3 -m pytest -p no:cacheprovider -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
