#!/usr/bin/env bash
# The benchmark (bench/run.ts): sets up what it needs (packages, kiln, the registry, the Node.js
# base image, and Debian's docker.io for the BuildKit column), then measures kiln against its
# peers, interleaved. Results: bench/results/ (JSON per run, latest.md, latest.svg).
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
docker_install=
if [ ! -x /usr/sbin/dockerd ]; then
  say "installing docker.io (dockerd 20.10 with BuildKit: a benchmark peer, never kiln's engine), meanwhile the base image"
  [ "$(id -u)" = 0 ] || die "run as root: apt-get install is needed"
  mkdir -p "$KILN_STATE"
  # The package's own service is not used: the benchmark runs a dockerd of its own.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null) \
    >"$KILN_STATE/docker-install.log" 2>&1 &
  docker_install=$!
fi
"$KILN_ROOT/scripts/base-images.sh" node
if [ -n "$docker_install" ] && ! wait "$docker_install"; then
  say "docker.io could not be installed (see $KILN_STATE/docker-install.log): the BuildKit column will be skipped"
fi
cd "$KILN_ROOT"
export KILN_BENCH_SETUP_SECONDS=$SECONDS # the set-up's share of the bench's time, in the report
exec node --import tsx bench/run.ts
