#!/usr/bin/env bash
# Builds kiln's builder machine image (containerfiles/kiln-builder.Containerfile) with podman
# and pushes it to the local registry as $KILN_REGISTRY/kiln/builder:<version>.
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/base-images.sh" node
use_script_podman
ctx="$KILN_STATE/builder-ctx"
rm -rf "$ctx" && mkdir -p "$ctx"
cp -r "$KILN_ROOT/dist" "$KILN_ROOT/package.json" "$KILN_ROOT/package-lock.json" "$ctx/"
cp "$KILN_ROOT/containerfiles/kiln-builder.Containerfile" "$ctx/Containerfile"
version=$(node -p 'require(process.argv[1]).version' "$KILN_ROOT/package.json")
ref="$KILN_REGISTRY/kiln/builder:$version"
say "building $ref"
podman build -q --format docker --network host --build-arg "BASE=$KILN_REGISTRY/kiln/node:20-slim" -t "$ref" "$ctx" >/dev/null
podman push -q "$ref"
echo "$ref"
