// kiln's benchmark: every scenario against every engine, interleaved in one run on the same
// apps, base image and machine, so that the ratios hold on a shared, noisy machine. Run it with
// `npm run bench` (scripts/bench.sh installs and sets up what it needs first).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { helloNode, multiStage, nodeApi, tsMultiStage, tsService, type AppRepo } from "./apps.js";
import { buildkitEngine } from "./engines/buildkit.js";
import { byHandEngine } from "./engines/by-hand.js";
import { cleanRunnerEngine } from "./engines/clean.js";
import { DIGEST, removeTree, type BenchEnv, type Engine, type TimedLine } from "./engines/engine.js";
import { kilnEngine } from "./engines/kiln.js";
import { fileCreateMicros } from "./lib/fs-probe.js";
import { buildWithStalled, rssMiB, rssWithSubscribers } from "./memory.js";
import { profileOf, type Segment } from "./lib/timeline.js";
import { markdown, profileMarkdown, ratioTable, summarize, svgChart, type Series } from "./report.js";
import { schedulerBench } from "./wake.js";

const ROOT = new URL("..", import.meta.url).pathname;
const REPS = Number(process.env.KILN_BENCH_REPS ?? 7);
/** Seconds to wait after the cold rows' resets (untimed): past a minute no deletion is recent (bench/lib/fs-probe.ts). */
const COLD_SETTLE_S = Number(process.env.KILN_BENCH_COLD_SETTLE ?? 0);
// The larger app's deps row: npm ci of 301 packages, the same work in every engine, 15-20 s a
// build. 7 runs of it would add 4 minutes and take the bench past 15 on our machines.
const API_DEPS_REPS = Math.min(REPS, Number(process.env.KILN_BENCH_API_DEPS_REPS ?? 3));
const REGISTRY = process.env.KILN_REGISTRY ?? "127.0.0.1:5000";
const BASE_IMAGE = `${REGISTRY}/kiln/node:20-slim`;
// For a quicker look: only these apps (hello-node, node-api, multi-stage, ts-service,
// ts-multi-stage), and without these parts (clean, cold, memory, wake).
const ONLY_APPS = process.env.KILN_BENCH_APPS?.split(",").filter(Boolean);
const SKIP = new Set(process.env.KILN_BENCH_SKIP?.split(",").filter(Boolean) ?? []);

const say = (s: string) => process.stderr.write(`${s}\n`);

/** Where the bench's own time goes: the wall time of each phase, in the report. */
const phases: { name: string; seconds: number }[] = [];
let phaseStarted = Date.now();
function endPhase(name: string) {
  const now = Date.now();
  const seconds = (now - phaseStarted) / 1000;
  phases.push({ name, seconds });
  phaseStarted = now;
  say(`(${name}: ${seconds.toFixed(0)} s)`);
}

/** What the bench started (kilnds, dockerds, the scheduler): stopped too when the bench fails. */
const running: { close(): Promise<void> }[] = [];
function track<T extends { close(): Promise<void> }>(x: T): T {
  running.push(x);
  return x;
}

async function main() {
  const started = Date.now();
  const work = join(ROOT, "bench/work");
  removeTree(work); // podman leaves its storage's overlay directory mounted
  mkdirSync(work, { recursive: true });
  const env: BenchEnv = { root: ROOT, work, registry: REGISTRY };
  const hello = helloNode(ROOT, work);
  const api = nodeApi(ROOT, work);
  const multi = multiStage(ROOT, work);
  const ts = tsService(ROOT, work);
  const tsMulti = tsMultiStage(ROOT, work);
  const apps: AppRepo[] = [hello, api, multi, ts, tsMulti].filter((a) => !ONLY_APPS || ONLY_APPS.includes(a.name));

  const port = 5490 + Math.floor(Math.random() * 300);
  const kiln = track(await kilnEngine(env, { name: "kiln", port, fastPath: true }));
  const kilnFull = track(await kilnEngine(env, { name: "kiln-full", port: port + 1, fastPath: false }));
  const buildkit = await buildkitEngine(env);
  if (!("skipped" in buildkit)) track(buildkit);
  const notes: string[] = [];
  if ("skipped" in buildkit) notes.push(`BuildKit skipped: ${buildkit.skipped}.`);
  const engines: Engine[] = [kiln, kilnFull, byHandEngine(env, "buildah"), byHandEngine(env, "podman"), ...("skipped" in buildkit ? [] : [buildkit])];
  const clean = cleanRunnerEngine(env, { preloaded: false, baseImage: BASE_IMAGE });
  const cleanPreloaded = cleanRunnerEngine(env, { preloaded: true, baseImage: BASE_IMAGE });

  const series = new Map<string, Series>();
  /** Each sample's timed output, beside series' samples (the profile is the median run's). */
  const timelines = new Map<string, TimedLine[][]>();
  const record = (scenario: string, engine: string, ms: number, timeline?: TimedLine[]) => {
    const key = `${scenario}/${engine}`;
    if (!series.has(key)) series.set(key, { scenario, engine, samplesMs: [] });
    series.get(key)!.samplesMs.push(ms);
    if (timeline) timelines.set(key, [...(timelines.get(key) ?? []), timeline]);
    say(`  ${scenario.padEnd(22)} ${engine.padEnd(16)} ${ms.toFixed(0).padStart(6)} ms`);
  };
  const fastCount = { fast: 0, full: 0 };
  const fastByApp = new Map<string, { fast: number; full: number }>();
  const scenarioName = (s: string, app: AppRepo) => (app === hello ? s : `${s} · ${app.name}`);
  const timed = async (scenario: string, app: AppRepo, e: Engine, commit: string) => {
    const t0 = performance.now();
    const digest = await e.build(app, commit);
    const ms = performance.now() - t0;
    if (!DIGEST.test(digest)) throw new Error(`${e.name}: no digest`);
    record(scenarioName(scenario, app), e.name, ms, e.timeline);
    // What kilnd does after the result (a full build's prune: podman processes) must not run
    // beside the next engine's timed build (session 25: until then it did).
    await e.settle?.();
    if (e === kiln) {
      const way = kiln.last?.fastPath ? "fast" : "full";
      fastCount[way]++;
      const per = fastByApp.get(app.name) ?? { fast: 0, full: 0 };
      per[way]++;
      fastByApp.set(app.name, per);
    }
    return digest;
  };
  /** The engines in a different order every run: no engine always goes first or last. */
  const rotated = <T>(list: T[], i: number) => [...list.slice(i % list.length), ...list.slice(0, i % list.length)];

  // The larger app runs on the engines the issue names (kiln, podman by hand, BuildKit): its
  // first, cold build costs 20 s per engine.
  const enginesFor = (app: AppRepo) => (app !== api ? engines : engines.filter((e) => e.name !== "kiln-full" && e.name !== "buildah"));
  endPhase("set-up: apps, two kilnds, dockerd");
  // Untimed, so the engines warm up side by side: each pulls the base and fills its own cache.
  say("warming up: a first build of each app on each engine, side by side (kiln's becomes the fast path's base)");
  // The dependency changes' lockfiles are made meanwhile (npm resolving a few hundred packages).
  const lockfiles = Promise.all([
    ...Array.from({ length: REPS }, (_, i) => hello.prepareDependency(i)),
    ...Array.from({ length: REPS }, (_, i) => ts.prepareDependency(i)),
    ...Array.from({ length: API_DEPS_REPS }, (_, i) => api.prepareDependency(i)),
  ]);
  for (const app of apps) {
    const commit = app.change();
    await Promise.all(enginesFor(app).map((e) => e.build(app, commit)));
  }
  await lockfiles;
  endPhase("warm-up");

  for (let i = 0; i < REPS; i++) {
    say(`run ${i + 1}/${REPS}`);
    for (const app of apps) {
      const warm = app.change();
      for (const e of rotated(enginesFor(app), i)) await timed("warm", app, e, warm);
      for (const e of rotated(enginesFor(app), i + 1)) await timed("no-change", app, e, warm);
      // The multi-stage apps' rows are warm and no-change (their deps change is their single-stage
      // app's again). ts-service's deps row is followed by the next run's warm row, a source change
      // with a RUN after it: in kiln it stands on the snapshots of the steps the deps build ran.
      if ((app !== hello && app !== api && app !== ts) || (app === api && i >= API_DEPS_REPS)) continue;
      const deps = await app.addDependency(i);
      for (const e of rotated(enginesFor(app), i + 2)) await timed("deps", app, e, deps);
    }
  }
  notes.push(`kiln's builds in the runs above: ${fastCount.fast} took the fast path, ${fastCount.full} the full build (a deps change takes the fast path from the COPY of package.json when the last full build left the image below it).`);
  notes.push(`By app: ${[...fastByApp].map(([name, c]) => `${name} ${c.fast} fast / ${c.full} full`).join(", ")}.`);
  const idleAfterBuilds = rssMiB(kiln.pid()!);
  endPhase("warm, no-change, deps");

  if (!SKIP.has("clean")) say("clean runners: an empty storage for every build, the layer cache in the registry");
  for (let i = 0; i < (SKIP.has("clean") ? 0 : REPS); i++) {
    const commit = hello.change();
    for (const c of rotated([clean, cleanPreloaded], i)) {
      await c.prepare();
      await timed("warm", hello, c, commit);
    }
  }

  endPhase("clean runners");
  if (!SKIP.has("cold")) await coldRows();
  endPhase("cold");
  async function coldRows() {
    say("cold: every engine's storage emptied, the base image pulled from the registry");
    // Engines of their own, whose storage only ever holds this app's cold builds: emptying it
    // between runs (untimed) is quick, unlike the warm engines' with the larger app's layers.
    const cold: Engine[] = [
      track(await kilnEngine(env, { name: "kiln", dirName: "kiln-cold", port: port + 3, fastPath: true })),
      byHandEngine(env, "podman", "podman-cold"),
    ];
    if (!("skipped" in buildkit)) {
      const b = await buildkitEngine(env, "buildkit-cold");
      if ("skipped" in b) throw new Error(`the cold BuildKit daemon did not start: ${b.skipped}`);
      cold.push(track(b));
    }
    const probes: number[] = [];
    for (let i = 0; i < REPS; i++) {
      const commit = hello.change();
      await Promise.all(cold.map((e) => e.reset())); // untimed, side by side
      // The resets' deletions written out before the timed builds, whichever engine made them (a
      // kiln or podman reset removes a tree of thousands of files; dockerd prunes its own).
      execFileSync("sync");
      if (COLD_SETTLE_S > 0) await new Promise((r) => setTimeout(r, COLD_SETTLE_S * 1000));
      probes.push(fileCreateMicros(work));
      say(`  file creation on the bench's volume before run ${i + 1}: ${probes.at(-1)!.toFixed(0)} µs per file`);
      for (const e of rotated(cold, i)) await timed("cold", hello, e, commit);
    }
    for (const e of cold) await e.close();
    notes.push(
      `Cold runs${COLD_SETTLE_S > 0 ? ` (each ${COLD_SETTLE_S} s after the resets, KILN_BENCH_COLD_SETTLE)` : ""}: creating an empty file on the bench's volume took ${probes.map((p) => p.toFixed(0)).join(", ")} µs before runs 1–${REPS} (bench/lib/fs-probe.ts). The volume is ext4 without a journal: a file created in a block group where thousands were deleted in the last minute (the resets') costs a scan of them, which this probe reads (bench/lib/fs-probe.ts); kilnd marks its storage's directories so that new trees start in other groups (src/storage/spread-dirs.ts), podman by hand and dockerd do not.`,
    );
  }

  say("memory and log subscribers (kiln-full: every build runs podman and writes its whole log)");
  const subs = SKIP.has("memory") ? { peakMiB: NaN, lines: 0 } : await rssWithSubscribers(kilnFull, hello, hello.change(), 100);
  const stalled: Record<string, number[]> = { none: [], "1 stalled": [], "10 stalled": [] };
  for (let i = 0; i < (SKIP.has("memory") ? 0 : REPS); i++) {
    for (const [label, n] of rotated<[string, number]>([["none", 0], ["1 stalled", 1], ["10 stalled", 10]], i)) {
      const ms = await buildWithStalled(kilnFull, hello, hello.change(), n);
      stalled[label]!.push(ms);
      record("log readers", `kiln-full, ${label}`, ms);
    }
  }

  endPhase("memory, log readers");
  say("wake: kilnd start to first answered RPC; webhook to pushed digest through the scheduler");
  for (let i = 0; i < (SKIP.has("wake") ? 0 : REPS); i++) record("wake: start → RPC", "kilnd", await kiln.startupMs());
  const idleFresh = rssMiB(kiln.pid()!);
  if (!SKIP.has("wake")) {
    const sched = track(await schedulerBench(env, hello, port + 2));
    await sched.deploy(hello.change());
    await sched.deploy(hello.change());
    for (let i = 0; i < REPS; i++) record("wake: webhook → digest", "kiln-scheduler", (await sched.deploy(hello.change())).ms);
    await sched.close();
  }

  endPhase("wake");
  for (const e of [...engines, clean, cleanPreloaded]) await e.close();
  endPhase("clean-up");

  const order = ["kiln", "kiln-full", "buildah", "podman", "buildkit", "clean", "clean-preloaded"];
  const scenarios = [...new Set([...series.values()].map((s) => s.scenario))];
  const rank = (e: string) => (order.includes(e) ? order.indexOf(e) : order.length);
  const rows = [...series.values()]
    .map(summarize)
    .sort((a, b) => scenarios.indexOf(a.scenario) - scenarios.indexOf(b.scenario) || rank(a.engine) - rank(b.engine));
  const versions = {
    podman: execFileSync("podman", ["--version"], { encoding: "utf8" }).trim(),
    buildkit: "skipped" in buildkit ? "skipped" : execFileSync("/usr/sbin/dockerd", ["--version"], { encoding: "utf8" }).trim(),
    node: process.version,
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? "?"}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
  };
  const memory = { idleFreshMiB: idleFresh, idleAfterBuildsMiB: idleAfterBuilds, peakWith100SubscribersMiB: subs.peakMiB, linesPerSubscriber: subs.lines };
  // scripts/bench.sh says how long its set-up took (packages, registry, base image).
  const setupS = Number(process.env.KILN_BENCH_SETUP_SECONDS ?? 0);
  if (setupS > 0) phases.unshift({ name: "scripts/bench.sh: packages, registry, base image", seconds: setupS });
  const minutes = (Date.now() - started) / 60_000 + setupS / 60;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const out = join(ROOT, "bench/results");
  mkdirSync(out, { recursive: true });
  // Each row's median run, phase by phase and step by step.
  const profiles = new Map<string, Segment[]>();
  for (const r of rows) {
    const key = `${r.scenario}/${r.engine}`;
    const runs = timelines.get(key);
    if (!runs || runs.length !== r.samplesMs.length) continue;
    const median = r.samplesMs.reduce((best, ms, i) => (Math.abs(ms - r.medianMs) < Math.abs(r.samplesMs[best]! - r.medianMs) ? i : best), 0);
    profiles.set(key, profileOf(r.engine, runs[median]!));
  }
  writeFileSync(join(out, `${stamp}.json`), JSON.stringify({ date: new Date().toISOString(), reps: REPS, nodeApiDepsReps: API_DEPS_REPS, minutes, phases, versions, memory, notes, results: rows, profiles: Object.fromEntries(profiles) }, null, 2));
  writeFileSync(join(out, "profile.md"), `Profiles of the median runs of ${stamp} (\`npm run bench\`; bench/lib/timeline.ts reads them from each engine's timed output).\n\n${profileMarkdown(rows, profiles)}`);
  const f1 = (n: number) => n.toFixed(1);
  const md = [
    `Run ${new Date().toISOString()} — ${versions.cpus}, ${versions.memory}, ${versions.podman}, ${versions.buildkit}, Node ${versions.node}; \`npm run bench\`, ${REPS} runs of every row but deps · node-api (${API_DEPS_REPS}), interleaved; ${minutes.toFixed(1)} min in all.`,
    "",
    markdown(rows),
    "",
    "Ratios of medians measured in this run (the issue's targets):",
    "",
    ratioTable(rows),
    "",
    `kilnd's memory (RSS): ${SKIP.has("wake") ? "not measured just after start (kilnd is restarted by the wake rows, skipped)" : `${f1(idleFresh)} MiB idle just after start`}, ${f1(idleAfterBuilds)} MiB idle after ${fastCount.fast + fastCount.full} builds of its own` +
      (SKIP.has("memory") ? " (the build followed by 100 subscribers skipped: KILN_BENCH_SKIP)." : `, ${f1(subs.peakMiB)} MiB at most during a build followed live by 100 subscribers (each received all ${subs.lines} lines).`),
    ...notes.map((n) => `\n${n}`),
    "",
    `Where the bench's ${minutes.toFixed(1)} min went: ${phases.map((p) => `${p.name} ${p.seconds.toFixed(0)} s`).join(", ")}.`,
    "",
  ].join("\n");
  writeFileSync(join(out, "latest.md"), md);
  writeFileSync(join(out, "latest.svg"), svgChart(rows.filter((r) => !r.scenario.startsWith("log readers")), "commit → pushed digest, median with min–max (log scale)"));
  process.stdout.write(`${md}\n`);
}

main().catch(async (e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  await Promise.allSettled(running.map((r) => r.close()));
  process.exit(1);
});
