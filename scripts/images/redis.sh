#!/usr/bin/env bash
# Makes `swell-redis:7`, the Redis image of the kind demo and e2e tier: the official redis:7 where Docker
# Hub answers, otherwise Debian's redis-server on swell/debian:bookworm (scripts/images/debian-base.sh).
# Skipped when present. Prints the image reference.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="swell-redis:7"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  if timeout 60 docker pull -q redis:7 >/dev/null 2>&1; then
    docker tag redis:7 "$image"
  else
    "$here/debian-base.sh" >/dev/null
    echo "redis.sh: building $image from Debian's redis-server" >&2
    docker build -q -t "$image" - >/dev/null <<'DOCKERFILE'
FROM swell/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
USER 65532:65532
EXPOSE 6379
ENTRYPOINT ["redis-server"]
DOCKERFILE
  fi
fi
echo "$image"
