#!/usr/bin/env bash
# Build a base image equivalent to python:3.11-slim-bookworm from Debian's own packages, for
# hosts that reach a Debian mirror and PyPI but not Docker Hub:
#
#   sudo deploy/base-image.sh [--ca-bundle FILE] [TAG]     # default TAG integration-bus-base:bookworm
#   docker build --build-arg BASE=integration-bus-base:bookworm -t integration-bus .
#
# --ca-bundle: a CA bundle to trust inside the image (a TLS-inspecting proxy's CA); pip is told
# to use the system bundle. Needs debootstrap and a running Docker engine.
set -euo pipefail
ca_bundle=""
if [ "${1:-}" = "--ca-bundle" ]; then ca_bundle=$2; shift 2; fi
tag=${1:-integration-bus-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null
if [ -n "$ca_bundle" ]; then
  cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
echo "$tag"
