#!/usr/bin/env bash
# The whole test suite, on a fresh machine of ours: installs what is missing (scripts/setup.sh),
# runs the static checks, then every test with node's test runner against real podman, a real
# registry and real git repositories. Extra arguments go to node --test (e.g. a test file).
source "$(dirname "$0")/lib.sh"
"$KILN_ROOT/scripts/setup.sh"
"$KILN_ROOT/scripts/check.sh"
cd "$KILN_ROOT"
# Two test files at a time (each has its own kilnds, registry and directories), the longest
# first so that the two runners finish together; the rest in name order.
LONGEST=(
  test/integration/fast-path-starts.test.ts
  test/integration/fast-path.test.ts
  test/integration/fast-path-differential.test.ts
  test/integration/builder-image.test.ts
  test/integration/volume.test.ts
  test/integration/scheduler-replicas.test.ts
)
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t rest < <(find test -name '*.test.ts' | sort | grep -vxF -f <(printf '%s\n' "${LONGEST[@]}"))
  files=("${LONGEST[@]}" "${rest[@]}")
fi
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
