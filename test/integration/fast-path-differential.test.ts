// The fast path's differential test: generated repositories, Containerfiles and commit
// sequences (test/fuzz/scenarios.ts), every commit built with and without the fast path, the
// images compared. A fixed budget here (KILN_FUZZ_RUNS scenarios, seed KILN_FUZZ_SEED);
// `npm run fuzz` runs a longer one. A case it finds becomes an example in fast-path.test.ts or
// fast-path-starts.test.ts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fastPathWorld } from "../helpers/fast-path-apps.js";
import { fuzzFastPath } from "../fuzz/differential.js";
import { pushFreshBase } from "../helpers/base-image.js";

const SEED = Number(process.env.KILN_FUZZ_SEED ?? 2);
const RUNS = Number(process.env.KILN_FUZZ_RUNS ?? 6);
const SINGLE = Number(process.env.KILN_FUZZ_SINGLE_RUNS ?? 4);

describe("fast path differential (generated cases)", () => {
  const w = fastPathWorld("fuzz");

  test(`${RUNS} generated scenarios (seed ${SEED}): the fast path's images equal the full builds'`, async (t) => {
    // Each scenario on a base of its own: its first commit finds the base new to storage.
    const stats = await fuzzFastPath({ fast: w.fast, full: w.full, reg: w.reg, base: w.base, dir: join(w.dir, "repos"), seed: SEED, runs: RUNS, freshBase: (tag) => pushFreshBase(w.reg.host, tag) });
    t.diagnostic(`${stats.scenarios} scenarios, ${stats.builds} commits built twice, ${stats.fast} by kiln (${stats.first} first builds, ${stats.onSnapshots} fast builds on kiln's snapshots of its own steps), ${stats.failedBoth} failed on both sides`);
    assert.ok(stats.fast > stats.first, "some builds took the fast path (else the test compares nothing)");
  });

  test(`${SINGLE} generated single-stage scenarios (seed ${SEED}), each on a base new to storage: kiln's first builds and the fast builds after them equal the full builds'`, async (t) => {
    const stats = await fuzzFastPath({ fast: w.fast, full: w.full, reg: w.reg, base: w.base, dir: join(w.dir, "repos-single"), seed: SEED, runs: SINGLE, stages: false, prefix: "s", freshBase: (tag) => pushFreshBase(w.reg.host, tag) });
    t.diagnostic(`${stats.scenarios} scenarios, ${stats.builds} commits built twice, ${stats.fast} by kiln (${stats.first} first builds), ${stats.failedBoth} failed on both sides`);
    assert.ok(stats.first > 0, "some first builds were kiln's (else they are not compared)");
  });
});
