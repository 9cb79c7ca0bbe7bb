#!/bin/sh
# pip inside the Dockerfile's builder stage, with the build host's CA bundle and configuration when
# scripts/images/build.sh supplied them (in /build-host, which never reaches an image).
set -eu
if [ -f /build-host/ca-certificates.crt ]; then
  export PIP_CERT=/build-host/ca-certificates.crt
fi
if [ -f /build-host/pip.conf ]; then
  export PIP_CONFIG_FILE=/build-host/pip.conf
fi
exec /venv/bin/python -m pip "$@"
