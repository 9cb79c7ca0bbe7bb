#!/usr/bin/env bash
# Builds Swell's images from the one Dockerfile and prints their refs, one per line:
#   swell-operator:<appVersion>  swell-worker:<appVersion>  swell-vector-store:<appVersion>
#   (appVersion from charts/swell/Chart.yaml)
#
#   scripts/images/build.sh                  both images
#   scripts/images/build.sh worker           one of: operator, worker, worker-fp32, vector-store (several may be named)
#
# The base is python:3.11-slim when the engine has it or can pull it; otherwise swell/python:3.11-slim,
# made by debian-base.sh from Debian packages (no registry needed). SWELL_BASE_IMAGE picks one outright.
# The build context is a tar of exactly the files an image is made of, so its sha256 (with the base
# image's id and the target) identifies the image: it is stored as the label dev.swell.content-hash and
# a build whose hash matches the tagged image is skipped. The host's pip configuration and CA bundle
# ($PIP_CERT) go into the context's build-host/ for the builder stage only; they are not hashed and never
# reach an image. Works with the legacy builder (no BuildKit). SWELL_BUILD_NO_CACHE=1 builds from scratch
# (docker build --no-cache), e.g. to time a cold build. Each target's venv stage stays tagged
# swell-build-stage:<target>, the cache of the next build; the image and stage a rebuild replaces are
# removed, so rebuilds do not pile up on disk.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

log() { echo "build.sh: $*" >&2; }

version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/swell/Chart.yaml)"
[ -n "$version" ] || { log "no appVersion in charts/swell/Chart.yaml"; exit 1; }
docker version >/dev/null 2>&1 || { log "cannot talk to the Docker engine (is dockerd running?)"; exit 1; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator worker vector-store)
for target in "${targets[@]}"; do
  case "$target" in
    operator|worker|worker-fp32|vector-store) ;;
    *) log "unknown target $target (operator, worker, worker-fp32 or vector-store)"; exit 2 ;;
  esac
done

# --- the base image -------------------------------------------------------------------------------
base="${SWELL_BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if docker image inspect python:3.11-slim >/dev/null 2>&1 || timeout 300 docker pull -q python:3.11-slim >/dev/null 2>&1; then
    base=python:3.11-slim
  else
    log "python:3.11-slim cannot be pulled; using swell/python:3.11-slim from debian-base.sh"
    base="$(scripts/images/debian-base.sh)"
  fi
fi
base_id="$(docker image inspect -f '{{.Id}}' "$base")"

# --- the build context ------------------------------------------------------------------------------
work="$(mktemp -d /tmp/swell-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# Tracked and new (not ignored) files of what the Dockerfile copies; nothing else can change an image.
git ls-files -z --cached --others --exclude-standard -- \
    Dockerfile pyproject.toml README.md contract operator worker cli scripts/images \
  | xargs -0 -r sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh \
  | LC_ALL=C sort -z > "$work/files"
tar_options=(--null --no-recursion --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w)
tar -c "${tar_options[@]}" -f "$work/context.tar" -T "$work/files"
sources_hash="$(sha256sum "$work/context.tar" | cut -c1-64)"

# The host's pip settings, for the builder stage only (appended after hashing).
mkdir -p "$work/host/scripts/images/build-host"
ca="${PIP_CERT:-}"
if [ -n "$ca" ] && [ -f "$ca" ]; then
  cp "$ca" "$work/host/scripts/images/build-host/ca-certificates.crt"
fi
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  # `pip config list` prints section.key='value'; settings that name files on this host are left out.
  python3 -m pip config list 2>/dev/null | python3 -c '
import ast, collections, sys
sections = collections.defaultdict(list)
for line in sys.stdin:
    name, _, value = line.strip().partition("=")
    section, _, key = name.partition(".")
    if key and key not in {"cert", "client-cert", "find-links", "log", "cache-dir", "target", "prefix", "src"}:
        sections[section].append(f"{key} = {ast.literal_eval(value)}")
for section, lines in sections.items():
    print(f"[{section}]", *lines, sep="\n")
' > "$work/host/scripts/images/build-host/pip.conf"
  [ -s "$work/host/scripts/images/build-host/pip.conf" ] || rm "$work/host/scripts/images/build-host/pip.conf"
fi
(cd "$work/host" && find scripts -type f | LC_ALL=C sort > ../host-files)
tar -r -f "$work/context.tar" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/host" -T "$work/host-files"

# --- the images -------------------------------------------------------------------------------------
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# Each rebuild of a target replaces its image and its venv stage; the replaced ones would stay on disk
# untagged (about 1 GB per rebuild of all targets). One still tagged elsewhere or used by a container is
# kept: `docker rmi` without --force refuses those.
remove_if_untagged() {
  [ -n "$1" ] || return 0
  [ "$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null || echo gone)" = 0 ] || return 0
  docker rmi "$1" >/dev/null 2>&1 || log "kept the replaced image ${1#sha256:} (a container still uses it)"
}

for target in "${targets[@]}"; do
  repository="swell-$target"
  ref="$repository:$version"
  hash="$(printf '%s\n' "$sources_hash" "$base_id" "$target" | sha256sum | cut -c1-64)"
  current="$(docker image inspect -f '{{ index .Config.Labels "dev.swell.content-hash" }}' "$ref" 2>/dev/null || true)"
  stage="swell-build-stage:$target"
  if [ "$current" = "$hash" ] && [ -n "$(image_id "$stage")" ] && [ "${SWELL_BUILD_NO_CACHE:-0}" != 1 ]; then
    log "$ref is up to date"
  else
    log "building $ref (base $base)"
    started=$SECONDS
    cache=()
    [ "${SWELL_BUILD_NO_CACHE:-0}" = 1 ] && cache=(--no-cache)
    old_stage="$(image_id "$stage")"
    old_image="$(image_id "$ref")"
    # The venv stage is built and tagged first (the target's build then reuses it from the cache), so
    # that the stage a rebuild replaces can be found and removed below instead of lingering untagged.
    if ! docker build "${cache[@]}" --target "$target-venv" --build-arg "BASE_IMAGE=$base" \
        -t "$stage" -f Dockerfile - < "$work/context.tar" > "$work/build.log" 2>&1 \
      || ! docker build --target "$target" --build-arg "BASE_IMAGE=$base" \
        --label "dev.swell.content-hash=$hash" --label "org.opencontainers.image.version=$version" \
        -t "$ref" -f Dockerfile - < "$work/context.tar" >> "$work/build.log" 2>&1; then
      tail -n 40 "$work/build.log" >&2
      log "building $ref failed"
      exit 1
    fi
    remove_if_untagged "$old_stage"
    remove_if_untagged "$old_image"
    log "built $ref in $((SECONDS - started)) s"
  fi
  echo "$ref"
done
