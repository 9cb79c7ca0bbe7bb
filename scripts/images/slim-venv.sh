#!/bin/sh
# The last step of a venv stage: drop what an image never runs (pip and setuptools, test suites and type
# stubs shipped inside wheels), move pure-Python packages into one zip (zip_pure.py) and compile the rest,
# since a read-only root filesystem cannot cache bytecode later.
set -eu
here="$(dirname "$0")"
/venv/bin/python -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
site="$(echo /venv/lib/python3*/site-packages)"
find "$site" -mindepth 2 -type d \( -name tests -o -name test \) -prune -exec rm -rf {} +
find "$site" -name '*.pyi' -delete
find "$site" -name __pycache__ -prune -exec rm -rf {} +
/venv/bin/python "$here/zip_pure.py" "$site" /venv/lib/site-packages.zip
# A file that is not Python (a template) is no reason to fail.
/venv/bin/python -m compileall -q -j 0 "$site" >/dev/null || true
