#!/usr/bin/env bash
# Makes the base images kiln's examples and tests build on, without Docker Hub, and pushes them to
# the local registry (skipped when the registry has them already):
#   busybox  $KILN_REGISTRY/kiln/busybox:1         FROM scratch + a static busybox (about a second)
#   node     $KILN_REGISTRY/kiln/node:bookworm     debootstrap bookworm + Debian's nodejs and npm (about a minute)
# usage: scripts/base-images.sh [busybox] [node]   (both when none is named)
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/registry.sh"
use_script_podman
work="$KILN_STATE/base"
mkdir -p "$work"

busybox_base() {
  registry_has kiln/busybox 1 && return 0
  say "making the busybox base image"
  mkdir -p "$work/busybox"
  cp "$(command -v busybox)" "$work/busybox/busybox"
  cp "$KILN_ROOT/containerfiles/busybox.Containerfile" "$work/busybox/Containerfile"
  podman build -q -t "$KILN_REGISTRY/kiln/busybox:1" "$work/busybox" >/dev/null
  podman push -q "$KILN_REGISTRY/kiln/busybox:1"
}

node_base() {
  registry_has kiln/node bookworm && return 0
  local root="$work/rootfs"
  if ! podman image exists localhost/kiln/bookworm-minbase:1; then
    say "debootstrap bookworm (minbase)"
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $work/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | podman import -q - localhost/kiln/bookworm-minbase:1 >/dev/null
    rm -rf "$root"
  fi
  say "making the node base image (Debian's nodejs and npm)"
  mkdir -p "$work/node"
  cp "$KILN_ROOT/containerfiles/node-base.Containerfile" "$work/node/Containerfile"
  # The machine's CA bundle, so npm works behind a TLS-intercepting proxy as it does on the host.
  cp /etc/ssl/certs/ca-certificates.crt "$work/node/ca-certificates.crt"
  podman build -q --network host -t "$KILN_REGISTRY/kiln/node:bookworm" "$work/node" >/dev/null
  podman push -q "$KILN_REGISTRY/kiln/node:bookworm"
}

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(busybox node)
for w in "${want[@]}"; do
  case "$w" in
    busybox) busybox_base ;;
    node) node_base ;;
    *) die "unknown base image $w (busybox, node)" ;;
  esac
done
