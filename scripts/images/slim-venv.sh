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
# Extension modules without their symbol tables (some wheels ship them: uvloop 14 MB -> 1.6 MB). Libraries
# that auditwheel grafted into *.libs are left alone, and every module that imported before must still.
if command -v strip >/dev/null 2>&1; then
  find "$site" -type d -name '*.libs' -prune -o -type f \( -name '*.cpython-*.so' -o -name '*.abi3.so' \) -print \
    > /tmp/extensions
  /venv/bin/python "$here/importable.py" "$site" < /tmp/extensions > /tmp/importable
  while read -r module; do strip --strip-unneeded "$module"; done < /tmp/extensions
  /venv/bin/python "$here/importable.py" "$site" --all < /tmp/importable > /dev/null
fi
# A file that is not Python (a template) is no reason to fail.
/venv/bin/python -m compileall -q -j 0 "$site" >/dev/null || true
