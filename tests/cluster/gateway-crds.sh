#!/usr/bin/env bash
# Fetches the proxies' own CRDs, against which the end-to-end test validates
# the chart's Traefik and Envoy Gateway examples: Traefik's Middleware,
# Envoy Gateway's SecurityPolicy and Gateway API's HTTPRoute. Each is taken
# from its project's Go module zip on the Go module proxy (GOPROXY's first
# entry), once per version, into
# ~/.cache/usher-testenv/crds/<module>@<version>/. Prints the CRD files,
# one a line.
set -euo pipefail

TRAEFIK_VERSION=${TRAEFIK_VERSION:-3.7.13}
ENVOY_GATEWAY_VERSION=${ENVOY_GATEWAY_VERSION:-1.9.1}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-1.7.0}
cache=${USHER_TESTENV_CACHE:-$HOME/.cache/usher-testenv}/crds

proxy=${GOPROXY:-$(go env GOPROXY 2>/dev/null || true)}
proxy=${proxy%%[,|]*}
case $proxy in "" | direct | off) proxy=https://proxy.golang.org ;; esac
proxy=${proxy%/}

log() { echo "gateway-crds.sh: $*" >&2; }

# module version file... → those files of the module, cached.
fetch() {
  local module=$1 version=$2; shift 2
  local dir=$cache/$module@$version f missing=()
  for f in "$@"; do [ -s "$dir/$(basename "$f")" ] || missing+=("$f"); done
  if [ ${#missing[@]} -gt 0 ]; then
    local zip part=$dir/.part.$$
    zip=$(mktemp "${TMPDIR:-/tmp}/crds.XXXXXX")
    log "downloading $module@$version"
    curl -fsSL --retry 3 -o "$zip" "$proxy/$module/@v/$version.zip" || { rm -f "$zip"; exit 1; }
    mkdir -p "$dir"
    for f in "${missing[@]}"; do
      if ! unzip -p "$zip" "$module@$version/$f" > "$part" || [ ! -s "$part" ]; then
        rm -f "$zip" "$part"
        log "$f is not in $module@$version"
        exit 1
      fi
      mv "$part" "$dir/$(basename "$f")"
    done
    rm -f "$zip"
  fi
  for f in "$@"; do echo "$dir/$(basename "$f")"; done
}

fetch github.com/traefik/traefik/v3 "v$TRAEFIK_VERSION" \
  docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml
fetch github.com/envoyproxy/gateway "v$ENVOY_GATEWAY_VERSION" \
  charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml
fetch sigs.k8s.io/gateway-api "v$GATEWAY_API_VERSION" \
  config/crd/standard/gateway.networking.k8s.io_httproutes.yaml
