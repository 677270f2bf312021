#!/usr/bin/env bash
# Static checks: the protobuf schema lints clean, the generated code in src/gen is what
# `npm run generate` makes from proto/ today, and the TypeScript type-checks (strict).
source "$(dirname "$0")/lib.sh"
cd "$KILN_ROOT"
export PATH="$KILN_ROOT/node_modules/.bin:$PATH"
buf lint
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
buf generate -o "$out"
diff -r "$out/src/gen" src/gen >/dev/null || die "src/gen is stale: run npm run generate and commit the result"
tsc -p tsconfig.json --noEmit
say "checks passed (buf lint, generated code up to date, tsc --noEmit)"
