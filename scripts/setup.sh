#!/usr/bin/env bash
# Installs what kiln needs on a Debian bookworm machine (idempotent): podman, runc, buildah, skopeo,
# the registry, git, busybox, debootstrap, htpasswd (apache2-utils), openssl, getfattr (attr: the fast path reads overlay's xattrs) and PostgreSQL 15 from apt; node modules with npm ci; then builds kiln.
source "$(dirname "$0")/lib.sh"
need=()
for c in podman buildah runc skopeo docker-registry git busybox debootstrap curl fuse-overlayfs htpasswd openssl getfattr; do
  command -v "$c" >/dev/null || need+=("$c")
done
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  say "installing system packages (missing: ${need[*]})"
  [ "$(id -u)" = 0 ] || die "run as root: apt-get install is needed"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah runc skopeo docker-registry git busybox-static debootstrap curl ca-certificates \
    uidmap iptables containernetworking-plugins fuse-overlayfs apache2-utils openssl postgresql attr >/dev/null
fi
cd "$KILN_ROOT"
# npm ci again only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing node modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
say "building kiln"
npm run -s build
