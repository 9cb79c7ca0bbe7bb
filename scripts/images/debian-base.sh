#!/usr/bin/env bash
# Makes the Debian base images every Swell image build starts from, where no registry can be reached:
#   swell/debian:bookworm      debootstrap --variant=minbase bookworm, imported with `docker import`
#   swell/python:3.11-slim     the same plus Debian's python3.11 (a stand-in for python:3.11-slim)
# Both are skipped when present. On a machine that can pull from Docker Hub they are not needed: the
# Dockerfile's default base is python:3.11-slim. Needs root, debootstrap and a running Docker engine.
set -euo pipefail
suite="${SWELL_DEBIAN_SUITE:-bookworm}"
mirror="${SWELL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
debian_image="swell/debian:$suite"
python_image="swell/python:3.11-slim"

log() { echo "debian-base.sh: $*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$debian_image"; then
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rootfs="$(mktemp -d /tmp/swell-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $suite into $rootfs"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "docker import $debian_image"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$debian_image" >/dev/null
fi

if ! have "$python_image"; then
  log "building $python_image from $debian_image"
  docker build -q -t "$python_image" - >/dev/null <<DOCKERFILE
FROM $debian_image
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE
fi
echo "$python_image"
