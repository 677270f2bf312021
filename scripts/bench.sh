#!/usr/bin/env bash
# The benchmark (bench/run.ts): sets up what it needs (packages, kiln, the registry, the Node.js
# base image, and Debian's docker.io for the BuildKit column), then measures kiln against its
# peers, interleaved. Results: bench/results/ (JSON per run, latest.md, latest.svg).
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/base-images.sh" node
if [ ! -x /usr/sbin/dockerd ]; then
  say "installing docker.io (dockerd 20.10 with BuildKit: a benchmark peer, never kiln's engine)"
  [ "$(id -u)" = 0 ] || die "run as root: apt-get install is needed"
  apt-get update -qq
  # The package's own service is not used: the benchmark runs a dockerd of its own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null || say "docker.io could not be installed: the BuildKit column will be skipped"
fi
cd "$KILN_ROOT"
exec node --import tsx bench/run.ts
