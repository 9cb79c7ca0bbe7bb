#!/usr/bin/env bash
# Makes the Debian base images every Swell image build starts from, where no registry can be reached:
#   swell/debian:bookworm      debootstrap --variant=minbase bookworm, imported with `docker import`
#   swell/python:3.11-slim     the same plus Debian's python3.11 (a stand-in for python:3.11-slim)
# The Debian image is skipped when present. On a machine that can pull from Docker Hub they are not needed: the
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

# The python stand-in is rebuilt when this recipe changes (its hash is a label), flattened into one layer
# (FROM scratch + COPY) so what the trim removes is really gone: no docs, man pages, locales or apt caches,
# the way python:3.11-slim ships.
python_recipe="$(cat <<'RECIPE'
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/share/lintian/*' > /etc/dpkg/dpkg.cfg.d/swell-slim \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && apt-get clean \
 && find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/* /usr/share/man/* \
      /usr/share/info/* /usr/share/locale/* /usr/share/lintian /root/.cache \
 && find /usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
RECIPE
)"
recipe_hash="$(printf '%s' "$python_recipe" | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f '{{ index .Config.Labels "dev.swell.base-recipe" }}' "$python_image" 2>/dev/null)" != "$recipe_hash" ]; then
  log "building $python_image from $debian_image"
  docker build -q -t "$python_image" - >/dev/null <<DOCKERFILE
FROM $debian_image AS build
$python_recipe

FROM scratch
COPY --from=build / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL dev.swell.base-recipe=$recipe_hash
CMD ["python3"]
DOCKERFILE
fi
echo "$python_image"
