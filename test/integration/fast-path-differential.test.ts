// The fast path's differential test: generated repositories, Containerfiles and commit
// sequences (test/fuzz/scenarios.ts), every commit built with and without the fast path, the
// images compared. A fixed budget here (KILN_FUZZ_RUNS scenarios, seed KILN_FUZZ_SEED);
// `npm run fuzz` runs a longer one. A case it finds becomes an example in fast-path.test.ts or fast-path-starts.test.ts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { fuzzFastPath } from "../fuzz/differential.js";

const SEED = Number(process.env.KILN_FUZZ_SEED ?? 2);
const RUNS = Number(process.env.KILN_FUZZ_RUNS ?? 6);

describe("fast path differential (generated cases)", () => {
  let dir: string, reg: TestRegistry, base: string, fast: TestKilnd, full: TestKilnd;
  before(async () => {
    dir = tempDir("fuzz");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    [fast, full] = await Promise.all([
      startKilnd({ data: join(dir, "fast"), registry: reg.host }),
      startKilnd({ data: join(dir, "full"), registry: reg.host, args: ["--fast-path", "off"] }),
    ]);
  });
  after(async () => {
    await Promise.all([fast?.stop(), full?.stop()]);
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  test(`${RUNS} generated scenarios (seed ${SEED}): the fast path's images equal the full builds'`, async (t) => {
    const stats = await fuzzFastPath({ fast, full, reg, base, dir: join(dir, "repos"), seed: SEED, runs: RUNS });
    t.diagnostic(`${stats.scenarios} scenarios, ${stats.builds} commits built twice, ${stats.fast} by the fast path (${stats.onSnapshots} on kiln's snapshots of its own steps), ${stats.failedBoth} failed on both sides`);
    assert.ok(stats.fast > 0, "some builds took the fast path (else the test compares nothing)");
  });
});
