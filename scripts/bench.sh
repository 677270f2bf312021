#!/usr/bin/env bash
# The benchmark (bench/run.ts): sets up what it needs (packages, kiln, the registry, the Node.js
# base image), then measures kiln against podman by hand and a clean runner, interleaved.
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/base-images.sh" node
cd "$KILN_ROOT"
exec node --import tsx bench/run.ts
