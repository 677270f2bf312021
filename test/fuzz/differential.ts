// Runs generated scenarios (scenarios.ts) against a kilnd with the fast path and one without,
// side by side: every commit of every scenario is built by both, and the images must be equal.
// Shared by the suite's fixed budget (test/integration/fast-path-differential.test.ts) and
// `npm run fuzz` (test/fuzz/run.ts), which prints the seed of any failure.
import { join } from "node:path";
import fc from "fast-check";
import { createDifferential } from "../helpers/differential.js";
import { makeRepo } from "../helpers/git-repo.js";
import { logLines } from "../helpers/logs.js";
import type { TestKilnd } from "../helpers/kilnd.js";
import type { TestRegistry } from "../helpers/registry.js";
import { scenarioArb, type Scenario } from "./scenarios.js";

export interface FuzzStats {
  scenarios: number;
  builds: number;
  fast: number;
  /** Builds kiln made as first builds (fast counts them too). */
  first: number;
  /** Fast builds that stood on kiln's snapshots of its own steps from an earlier build. */
  onSnapshots: number;
  failedBoth: number;
}

export interface FuzzOptions {
  fast: TestKilnd;
  full: TestKilnd;
  reg: TestRegistry;
  base: string;
  dir: string;
  seed: number;
  runs: number;
  log?: (line: string) => void;
  /**
   * A base image new to both kilnds' storage, by tag, for each scenario's first commit: kiln's
   * first build (fastpath/first-build.ts) is then held to the full build too. Without it every
   * scenario builds on o.base, which only the first finds new.
   */
  freshBase?: (tag: string) => string;
  /** false: single-stage Containerfiles only (scenarios.ts). */
  stages?: boolean;
  /** Names the scenarios' projects apart when one world runs several (fz-<seed>-<prefix><n>). */
  prefix?: string;
}

/** Resolves with the stats, or rejects with fast-check's report (seed, path, counterexample). */
export async function fuzzFastPath(o: FuzzOptions): Promise<FuzzStats> {
  const buildBoth = createDifferential(o.fast, o.full, o.reg);
  const stats: FuzzStats = { scenarios: 0, builds: 0, fast: 0, first: 0, onSnapshots: 0, failedBoth: 0 };
  const run = async (s: Scenario): Promise<void> => {
    const n = stats.scenarios++;
    const project = `fz-${o.seed}-${o.prefix ?? ""}${n}`;
    const base = o.freshBase?.(project);
    const files = base ? Object.fromEntries(Object.entries(s.files).map(([k, v]) => [k, k.endsWith("Containerfile") && typeof v === "string" ? v.replaceAll(o.base, base) : v])) : s.files;
    const repo = makeRepo(join(o.dir, project), files);
    const context = s.context === "." ? undefined : s.context;
    for (const [i, commit] of [repo.head(), ...s.commits.map((c, k) => repo.commit(c, `change ${k}`))].entries()) {
      const r = await buildBoth(repo, project, commit, { ...(context ? { context } : {}), buildArgs: s.buildArgs });
      stats.builds++;
      if (r.f.fastPath) stats.fast++;
      const lines = await logLines(o.fast, r.f.id);
      if (r.f.fastPath && lines.some((l) => /of kiln's own steps on it/.test(l))) stats.onSnapshots++;
      if (r.f.fastPath && lines.some((l) => l.startsWith("first build: buildah built"))) stats.first++;
      if (r.f.state !== 3 && r.g.state !== 3) stats.failedBoth++;
      if (r.differences.length > 0) {
        throw new Error(`${project}, commit ${i} (${commit.slice(0, 12)}): the fast path's image differs from the full build's:\n  ${r.differences.slice(0, 20).join("\n  ")}\nfast build log: kiln logs ${r.f.id}`);
      }
      if (o.log) {
        const why = r.f.fastPath ? "" : [lines.find((l) => l.startsWith("fast path: not")), lines.find((l) => l.startsWith("first build: not"))].filter(Boolean).join("; ");
        o.log(`${project} commit ${i}: ${r.f.fastPath ? "fast" : "full"} ${r.f.state === 3 ? "ok" : `failed on both: ${r.g.error.slice(0, 80)}`} ${why}`);
      }
    }
  };
  await fc.assert(
    fc.asyncProperty(scenarioArb(o.base, { stages: o.stages ?? true }), async (s) => {
      await run(s);
    }),
    // Every build is real: no shrinking (it would rebuild everything many times); the seed and the path replay the case.
    { seed: o.seed, numRuns: o.runs, endOnFailure: true, verbose: 1, includeErrorInReport: true },
  );
  return stats;
}
