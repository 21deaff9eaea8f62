#!/usr/bin/env bash
# Build a stand-in for the official `python:3.11-slim` image where Docker Hub is unreachable:
# debootstrap a minimal Debian bookworm (whose python3 is 3.11) with pip and venv, and `docker import`
# it under the tag the Dockerfile uses, so the Dockerfile stays exactly as it is for everyone else.
# Usage: scripts/docker-offline-base.sh [mirror]   (needs root, debootstrap and a running Docker engine)
set -euo pipefail
TAG=python:3.11-slim
MIRROR=${1:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-/usr/bin/docker}

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "docker-offline-base: $TAG already present"
  exit 0
fi
if "$DOCKER" pull "$TAG" >/dev/null 2>&1; then
  echo "docker-offline-base: pulled the official $TAG"
  exit 0
fi
root=$(mktemp -d /tmp/python-slim-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "docker-offline-base: debootstrapping Debian bookworm into $root"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$MIRROR" >/tmp/debootstrap.log 2>&1 || { tail -20 /tmp/debootstrap.log; exit 1; }
chroot "$root" python3 --version
# Keep the image slim like the official one: no apt lists, docs or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
tar -C "$root" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$TAG"
echo "docker-offline-base: imported $TAG"
