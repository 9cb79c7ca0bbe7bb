#!/usr/bin/env bash
# Builds KEDA v2.21.0 (operator + metrics API server) from the Go module proxy and wraps each binary in an
# image on swell/debian:bookworm (no image registry is reachable here). KEDA's go.mod carries a replace
# directive, so it is built as the main module from a writable copy of the module, not with `go install`.
# Binaries are cached under ~/.cache/swell/bin/keda-v2.21.0/; images are skipped when present.
# Prints the two image references, then the build time in seconds (0 when cached) on the last line.
set -euo pipefail
version="v2.21.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$HOME/.cache/swell/bin/keda-$version"
operator_image="swell/keda:${version#v}"
adapter_image="swell/keda-metrics-apiserver:${version#v}"
seconds=0
if [[ ! -x "$cache/keda" || ! -x "$cache/keda-adapter" ]]; then
  began=$(date +%s)
  moddir="$(go mod download -json "github.com/kedacore/keda/v2@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  build="$(mktemp -d)"
  trap 'chmod -R u+w "$build" && rm -rf "$build"' EXIT
  cp -r "$moddir/." "$build/"
  chmod -R u+w "$build"
  mkdir -p "$cache.partial"
  (
    cd "$build"
    export CGO_ENABLED=0
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$cache.partial/keda" ./cmd/operator
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$cache.partial/keda-adapter" ./cmd/adapter
  ) >&2
  rm -rf "$cache" && mv "$cache.partial" "$cache"
  seconds=$(( $(date +%s) - began ))
  echo "$seconds" > "$cache/build-seconds"
fi
"$root/scripts/images/debian-base.sh" >/dev/null
for pair in "keda:$operator_image" "keda-adapter:$adapter_image"; do
  binary="${pair%%:*}"; image="${pair#*:}"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    context="$(mktemp -d)"
    cp "$cache/$binary" "$context/$binary"
    docker build -q -t "$image" -f - "$context" >/dev/null <<DOCKERFILE
FROM swell/debian:bookworm
COPY $binary /usr/local/bin/$binary
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/$binary"]
DOCKERFILE
    rm -rf "$context"
  fi
  echo "$image"
done
cat "$cache/build-seconds" 2>/dev/null || echo "$seconds"
