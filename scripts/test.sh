#!/usr/bin/env bash
# The whole test suite, on a fresh machine of ours: installs what is missing (scripts/setup.sh),
# runs the static checks, then every test with node's test runner against real podman, a real
# registry and real git repositories. Extra arguments go to node --test (e.g. a test file).
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/check.sh"
cd "$KILN_ROOT"
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
