// kiln's benchmark: every scenario against every engine, interleaved in one run on the same app,
// base image and machine, so that the ratios hold on a shared, noisy machine. Run it with
// `npm run bench` (scripts/bench.sh sets up the registry and the base image first).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { byHandEngine, cleanRunnerEngine, kilnEngine, type BenchEnv, type Engine } from "./engines.js";
import { markdown, summarize, svgChart, type Series } from "./report.js";

const ROOT = new URL("..", import.meta.url).pathname;
const REPS = Number(process.env.KILN_BENCH_REPS ?? 7);
const SLOW_REPS = Number(process.env.KILN_BENCH_SLOW_REPS ?? 3);
const REGISTRY = process.env.KILN_REGISTRY ?? "127.0.0.1:5000";
const DEP_VERSIONS = ["7.0.0", "6.0.0", "5.0.0", "4.0.0", "3.0.0", "2.1.0", "2.0.2", "1.1.2", "1.1.0", "0.1.1"];

const git = (repo: string, ...args: string[]) => execFileSync("git", ["-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@kiln.invalid", ...args], { encoding: "utf8" }).trim();

async function main() {
  const work = join(ROOT, "bench/work");
  rmSync(join(work, "repo"), { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const repo = join(work, "repo");
  cpSync(join(ROOT, "examples/hello-node"), repo, { recursive: true });
  git(repo, "init", "-q", "-b", "main");
  git(repo, "add", "-A");
  git(repo, "commit", "-qm", "init");
  // The deps scenario adds a dependency the layer cache has never seen, every time: a different
  // version of one more package per run, its lockfile made here (outside the timing).
  const depDir = join(work, "dep-variant");
  const withDependency = (i: number) => {
    rmSync(depDir, { recursive: true, force: true });
    cpSync(join(ROOT, "examples/hello-node"), depDir, { recursive: true });
    const version = DEP_VERSIONS[i % DEP_VERSIONS.length]!;
    execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--loglevel=error", `is-number@${version}`], { cwd: depDir, stdio: "ignore" });
    return { pkg: readFileSync(join(depDir, "package.json"), "utf8"), lock: readFileSync(join(depDir, "package-lock.json"), "utf8") };
  };

  const env: BenchEnv = { root: ROOT, work, repo, registry: REGISTRY };
  const port = 5490 + Math.floor(Math.random() * 400);
  const kiln = await kilnEngine(env, port);
  const engines: Engine[] = [kiln, byHandEngine(env, "buildah"), byHandEngine(env, "podman")];
  const clean = cleanRunnerEngine(env);
  const series = new Map<string, Series>();
  const record = (scenario: string, engine: string, ms: number) => {
    const key = `${scenario}/${engine}`;
    if (!series.has(key)) series.set(key, { scenario, engine, samplesMs: [] });
    series.get(key)!.samplesMs.push(ms);
    process.stderr.write(`  ${scenario.padEnd(9)} ${engine.padEnd(7)} ${ms.toFixed(0)} ms\n`);
  };
  const timed = async (scenario: string, e: Engine, commit: string) => {
    const t0 = performance.now();
    const digest = await e.build(commit);
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`${e.name}: no digest`);
    record(scenario, e.name, performance.now() - t0);
  };
  let n = 0;
  const change = () => {
    writeFileSync(join(repo, "src/greeting.js"), `// bench change ${++n}\n"use strict";\nexports.greeting = (name) => \`hello ${n}, \${name}\`;\n`);
    git(repo, "commit", "-qam", `change ${n}`);
    return git(repo, "rev-parse", "HEAD");
  };

  process.stderr.write("warming up (first builds fill each engine's cache)\n");
  for (const e of engines) await e.build(change());

  for (let i = 0; i < REPS; i++) {
    const warm = change();
    for (const e of engines) await timed("warm", e, warm);
    for (const e of engines) await timed("no-change", e, warm);
    const deps = withDependency(i);
    writeFileSync(join(repo, "package.json"), deps.pkg);
    writeFileSync(join(repo, "package-lock.json"), deps.lock);
    git(repo, "commit", "-qam", `deps ${i}`);
    const depsCommit = git(repo, "rev-parse", "HEAD");
    for (const e of engines) await timed("deps", e, depsCommit);
  }
  for (let i = 0; i < SLOW_REPS; i++) {
    const warm = change();
    await timed("warm", clean, warm);
    const cold = change();
    for (const e of engines) {
      await e.reset();
      await timed("cold", e, cold);
    }
  }
  for (let i = 0; i < REPS; i++) record("wake", "kilnd", await kiln.startupMs());
  await kiln.close();
  await clean.close();

  const rows = [...series.values()].map(summarize);
  const versions = {
    podman: execFileSync("podman", ["--version"], { encoding: "utf8" }).trim(),
    node: process.version,
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? "?"}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
  };
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const out = join(ROOT, "bench/results");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `${stamp}.json`), JSON.stringify({ date: new Date().toISOString(), reps: REPS, slowReps: SLOW_REPS, versions, results: rows }, null, 2));
  const md = [
    `Run ${new Date().toISOString()} — ${versions.cpus}, ${versions.memory}, ${versions.podman}, Node ${versions.node}; \`npm run bench\` (${REPS} runs, ${SLOW_REPS} for cold and clean).`,
    "",
    markdown(rows),
    "",
  ].join("\n");
  writeFileSync(join(out, "latest.md"), md);
  writeFileSync(join(out, "latest.svg"), svgChart(rows, "commit → pushed digest, median with min–max (log scale)"));
  process.stdout.write(`${md}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
