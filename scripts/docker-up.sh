#!/usr/bin/env bash
# Makes sure a Docker engine runs here and can run --privileged containers (kind nodes are privileged).
#   - no Docker at all: installs Debian's docker.io;
#   - no engine running: starts dockerd (overlay2) and records it as ours under ~/.cache/swell/docker/;
#   - probes `docker run --rm --privileged swell/debian:bookworm true`;
#   - probe fails on an engine this script started: installs scripts/kind/swell-runc (runc minus
#     CAP_SYS_RESOURCE, which some VMs lack in their bounding set) as the default runtime, through the
#     engine's config file and a SIGHUP reload (running containers keep running), and probes again;
#   - probe fails on an engine somebody else runs: changes nothing and exits 1 with a one-line reason.
#     SWELL_DOCKER_ADOPT=1 declares the running engine ours (for an engine started by hand for Swell).
# A second call on a verified engine is a no-op (no probe; the verified dockerd pid + start time are kept).
# Exit 0: the engine runs privileged containers. Exit 1: the reason is the last line on stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${SWELL_CACHE:-$HOME/.cache/swell}/docker"
probe_image="swell/debian:bookworm"
pidfile=/var/run/docker.pid

log() { echo "docker-up.sh: $*" >&2; }
fail() { echo "docker-up.sh: $*" >&2; exit 1; }
engine_up() { timeout 10 docker info --format '{{.ID}}' >/dev/null 2>&1; }

# "PID STARTTIME" of the running dockerd, empty when unknown (no pidfile, dead pid, remote engine).
dockerd_identity() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 0
  echo "$pid $(awk '{print $22}' "/proc/$pid/stat")"
}

apt_install() {
  [ "$(id -u)" = 0 ] || fail "cannot install $* without root"
  log "apt-get install $*"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_dockerd() {
  [ "$(id -u)" = 0 ] || fail "no Docker engine runs and starting dockerd needs root"
  mkdir -p "$state"
  [ -s "$state/daemon.json" ] || echo '{}' >"$state/daemon.json"
  log "starting dockerd (log $state/dockerd.log)"
  rm -f "$pidfile"
  setsid nohup dockerd --storage-driver=overlay2 --config-file "$state/daemon.json" \
    >>"$state/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 60); do
    if engine_up && [ -n "$(dockerd_identity)" ]; then
      dockerd_identity >"$state/dockerd.owner"
      return 0
    fi
    sleep 1
  done
  tail -n 5 "$state/dockerd.log" >&2 || true
  fail "dockerd did not come up within 60 s (see $state/dockerd.log)"
}

# The config file the running dockerd reads on SIGHUP: its --config-file, else the default.
dockerd_config_file() {
  local pid="$1" previous="" arg
  while IFS= read -r -d '' arg; do
    case "$previous" in --config-file) echo "$arg"; return ;; esac
    case "$arg" in --config-file=*) echo "${arg#--config-file=}"; return ;; esac
    previous="$arg"
  done <"/proc/$pid/cmdline"
  echo /etc/docker/daemon.json
}

privileged_ok() { timeout 120 docker run --rm --privileged --network none "$probe_image" true >/dev/null 2>&1; }

install_wrapper() {
  local pid="$1" config
  command -v jq >/dev/null || apt_install jq
  mkdir -p "$state"
  install -m 0755 "$here/kind/swell-runc" "$state/swell-runc"
  config="$(dockerd_config_file "$pid")"
  mkdir -p "$(dirname "$config")"
  [ -s "$config" ] || echo '{}' >"$config"
  jq --arg wrapper "$state/swell-runc" \
    '.runtimes["swell-runc"] = {"path": $wrapper} | .["default-runtime"] = "swell-runc"' \
    "$config" >"$config.tmp"
  mv "$config.tmp" "$config"
  log "default runtime swell-runc ($state/swell-runc) via $config, reloading dockerd $pid"
  kill -HUP "$pid"
  local i
  for i in $(seq 1 20); do
    [ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" = swell-runc ] && return 0
    sleep 0.5
  done
  fail "dockerd $pid did not pick up the swell-runc runtime from $config (see its log)"
}

command -v docker >/dev/null || apt_install docker.io
if ! engine_up; then
  command -v dockerd >/dev/null || apt_install docker.io
  # Debian's package may start the engine itself (systemd); that one is ours too, we installed it.
  mkdir -p "$state"
  if engine_up; then dockerd_identity >"$state/dockerd.owner"; else start_dockerd; fi
fi

identity="$(dockerd_identity)"
if [ -n "$identity" ] && [ "$(cat "$state/verified" 2>/dev/null)" = "$identity" ]; then
  exit 0
fi
if [ "${SWELL_DOCKER_ADOPT:-0}" = 1 ] && [ -n "$identity" ]; then
  mkdir -p "$state"
  echo "$identity" >"$state/dockerd.owner"
fi

docker image inspect "$probe_image" >/dev/null 2>&1 || "$here/images/debian-base.sh" >/dev/null
if ! privileged_ok; then
  owned=0
  [ -n "$identity" ] && [ "$(cat "$state/dockerd.owner" 2>/dev/null)" = "$identity" ] && owned=1
  [ "$owned" = 1 ] || fail "the running Docker engine (not started by this script) cannot run --privileged containers (missing capabilities? see 'docker run --rm --privileged $probe_image true'); not changing it"
  install_wrapper "${identity%% *}"
  privileged_ok || fail "--privileged containers still fail with the swell-runc runtime (see $state/dockerd.log)"
fi
if [ -n "$identity" ]; then
  mkdir -p "$state"
  echo "$identity" >"$state/verified"
fi
