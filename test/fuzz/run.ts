// npm run fuzz [-- RUNS [SEED]]: the fast path's differential test with a longer budget and a
// fresh seed each time (printed first, and with any failure, to replay it:
// KILN_FUZZ_SEED=S KILN_FUZZ_RUNS=N scripts/test.sh test/integration/fast-path-differential.test.ts).
import { join } from "node:path";
import { pushBusyboxBase, pushFreshBase } from "../helpers/base-image.js";
import { startKilnd } from "../helpers/kilnd.js";
import { startRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { fuzzFastPath } from "./differential.js";

const runs = Number(process.argv[2] ?? process.env.KILN_FUZZ_RUNS ?? 40);
const seed = Number(process.argv[3] ?? process.env.KILN_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
// KILN_FUZZ_STAGES=single: single-stage Containerfiles only, each scenario's first commit kiln's first build.
const stages = process.env.KILN_FUZZ_STAGES !== "single";
console.log(`fuzz: ${runs} ${stages ? "" : "single-stage "}scenarios, seed ${seed}`);
const dir = tempDir("fuzz");
const reg = await startRegistry(join(dir, "registry"));
const base = pushBusyboxBase(reg.host);
const [fast, full] = await Promise.all([
  startKilnd({ data: join(dir, "fast"), registry: reg.host }),
  startKilnd({ data: join(dir, "full"), registry: reg.host, args: ["--fast-path", "off"] }),
]);
let code = 0;
try {
  const stats = await fuzzFastPath({ fast, full, reg, base, dir: join(dir, "repos"), seed, runs, log: (l) => console.log(l), freshBase: (tag) => pushFreshBase(reg.host, tag), stages });
  console.log(`fuzz: passed: ${stats.scenarios} scenarios, ${stats.builds} commits built twice, ${stats.fast} by kiln (${stats.first} first builds, ${stats.onSnapshots} fast builds on kiln's snapshots of its own steps), ${stats.failedBoth} failed on both sides`);
} catch (e) {
  console.error(String((e as Error).message ?? e));
  console.error(`fuzz: FAILED with seed ${seed}: replay with KILN_FUZZ_SEED=${seed} KILN_FUZZ_RUNS=${runs} scripts/test.sh test/integration/fast-path-differential.test.ts`);
  code = 1;
} finally {
  await Promise.all([fast.stop(), full.stop()]);
  await reg.stop();
  removeTree(dir);
}
process.exit(code);
