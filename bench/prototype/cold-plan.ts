// A prototype of the cold plan (README, "What is left on issue 14"), measured side by side with
// kiln's cold build as it is and with BuildKit's, on hello-node, every engine's storage emptied
// before each run (untimed). It does a first build the way the plan says kilnd would:
//
//   1. beside the FROM image's unpack (kiln's own layer store, as kilnd does it): both COPY
//      layers made from the commit's files, uploaded, and the FROM layers mounted into the
//      target repository from the base image's (a cross-repository mount: nothing re-uploaded);
//   2. after the unpack: buildah builds the steps before the first COPY (FROM, WORKDIR, ENV: the
//      "prefix", whose image the RUN stands on);
//   3. kiln runs `RUN npm ci` itself (run-steps.ts: runc on an overlay of the prefix image and the
//      COPY's layer), while buildah builds the skeleton beside it (every COPY and RUN a LABEL of
//      its own: buildah writes the config, bench/prototype/skeleton-config.ts);
//   4. the config is the skeleton's with those labels taken out and their history lines made the
//      real steps'; the RUN's layer, the config and the manifest are pushed.
//
// The COPY layers' directories above the destination are hello-node's (/app, made by WORKDIR),
// written here by hand: reading them from the FROM layers' tar headers is part of the plan that
// is not built. After the runs, the prototype's last image is compared with kiln's cold image of
// the same commit, path by path (owners, modes, contents, not times) and on the config's fields,
// so the measurement is of the right work. Not part of kiln: a measurement.
//
// Run after `npm run build` with the registry up and the base image pushed:
//   npx tsx bench/prototype/cold-plan.ts        (KILN_BENCH_REPS runs, 5 by default)
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import dockerignore from "@balena/dockerignore";
import { helloNode } from "../apps.js";
import { buildkitEngine } from "../engines/buildkit.js";
import { removeTree, run, startTimeline, type BenchEnv, type Engine, type TimedLine } from "../engines/engine.js";
import { kilnEngine } from "../engines/kiln.js";
import { fileCreateMicros } from "../lib/fs-probe.js";
import { createRegistryCredentials } from "../../src/registry/credentials.js";
import { RegistryClient, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256, type OciManifest } from "../../src/registry/client.js";
import { writeStorageConfig } from "../../src/podman/storage-config.js";
import { createPodman } from "../../src/podman/podman.js";
import { runcCommand } from "../../src/podman/runc.js";
import { planLabels } from "../../src/podman/labels.js";
import { kilnLabels } from "../../src/podman/kiln-labels.js";
import { exec } from "../../src/process/exec.js";
import { isCopyStep, planFastPath, type RunStep } from "../../src/fastpath/plan.js";
import { makeLayer, type Layer } from "../../src/fastpath/layer.js";
import { runSteps } from "../../src/fastpath/run-steps.js";
import { PLACEHOLDER, splitContainerfile } from "../../src/fastpath/first-build.js";
import { runHistory } from "../../src/fastpath/build-args.js";
import type { ImageConfig } from "../../src/fastpath/base.js";
import type { TarEntry } from "../../src/image/tar-entries.js";
import { viewImage } from "../../test/helpers/image-fs.js";

const ignore = dockerignore as unknown as typeof dockerignore.default;
const ROOT = join(import.meta.dirname, "../..");
const REGISTRY = process.env.KILN_REGISTRY ?? "127.0.0.1:5000";
const REPS = Number(process.env.KILN_BENCH_REPS ?? 5);
const BASE_REPO = "kiln/node";
const BASE_TAG = "20-slim";
const say = (s: string) => process.stderr.write(`${s}\n`);

/** The prototype as a bench engine: the same build() and reset() as the others. */
async function coldPlanEngine(env: BenchEnv): Promise<Engine & { close(): Promise<void> }> {
  const data = join(env.work, "cold-plan");
  const repo = "bench/cold-plan-hello-node";
  let layout: Awaited<ReturnType<typeof writeStorageConfig>>;
  let podman: ReturnType<typeof createPodman>;
  const setUp = async () => {
    removeTree(data);
    mkdirSync(data, { recursive: true });
    layout = await writeStorageConfig({ dataDir: data, insecureRegistries: [REGISTRY] });
    podman = createPodman({ layout, baseEnv: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" } });
  };
  await setUp();
  const engine: Engine & { close(): Promise<void> } = {
    name: "cold-plan",
    async build(app, commit) {
      const tl = startTimeline();
      const signal = new AbortController().signal;
      const ctx = join(data, "ctx");
      const tmp = join(data, "build");
      removeTree(tmp);
      mkdirSync(tmp, { recursive: true });
      // git archive's files are 0664 (tar.umask 0002); kiln's checkout writes them 0644.
      removeTree(ctx);
      mkdirSync(ctx, { recursive: true });
      const gitDir = app.repo.replace(/^file:\/\//, "");
      await run("sh", ["-c", 'git --git-dir "$1/.git" -c tar.umask=0022 archive "$2" | tar -x -C "$3"', "sh", gitDir, commit, ctx]);
      const committed = new Date((await run("git", ["--git-dir", `${gitDir}/.git`, "show", "-s", "--format=%cI", commit])).trim());
      tl.mark("git archive");
      const text = readFileSync(join(ctx, "Containerfile"), "utf8");
      const planned = planFastPath(text, undefined, 0, { buildArgs: {}, docker: true });
      if (!planned.ok) throw new Error(`plan: ${planned.reason}`);
      const plan = planned.plan;
      const from = new RegistryClient(REGISTRY, BASE_REPO, true, { signal });
      const target = new RegistryClient(REGISTRY, repo, true, { signal });
      const base = await from.getManifest(BASE_TAG);
      const fromRef = `${REGISTRY}/${BASE_REPO}:${BASE_TAG}`;
      tl.mark("FROM looked up");
      const penv = podman.env(join(tmp, "tmp"));
      mkdirSync(penv.TMPDIR!, { recursive: true });

      // 1. The unpack, and beside it the COPY layers, their upload and the FROM layers' mount.
      const unpacked = podman.baseLayers.ensure([{ reference: fromRef, digest: base.digest }], {
        credentials: createRegistryCredentials({}, [], {}),
        insecure: new Set([REGISTRY]),
        signal,
        env: penv,
        say: () => {},
      });
      const ignoreFile = [".containerignore", ".dockerignore"].map((f) => join(ctx, f)).find((f) => existsSync(f));
      const ig = ignore().add(ignoreFile ? readFileSync(ignoreFile, "utf8").split("\n") : []);
      const now = Date.now();
      // hello-node's: /app is WORKDIR's and /app/src the COPY's, root's, 0755 (the plan would read this from the FROM layers' headers).
      const app0: TarEntry = { path: "app", type: "directory", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: now };
      const layerOf = (sources: string[], dest: string, ancestors: TarEntry[]) => makeLayer({ contextDir: ctx, sources, dest, owner: { uid: 0, gid: 0 }, ancestors, ignored: (p) => ig.ignores(p), maxBytes: 64 << 20 });
      const later = plan.after.find(isCopyStep)!;
      const run0 = plan.after.find((s): s is RunStep => !isCopyStep(s))!;
      if (plan.after.length !== 2 || plan.after[0] !== run0) throw new Error("the prototype knows hello-node's shape only: COPY, RUN, COPY");
      const copies = (async () => {
        const [first, second] = await Promise.all([layerOf(plan.sources, "/app/", [app0]), layerOf(later.copy.sources, "/app/src/", [app0, { ...app0, path: "app/src" }])]);
        await Promise.all([
          ...base.manifest.layers.map((l) => mountBlob(repo, l.digest)),
          target.putBlob(first.digest, first.gz),
          target.putBlob(second.digest, second.gz),
        ]);
        tl.mark("COPY layers made and uploaded, FROM layers mounted");
        return [first, second] as const;
      })();
      const report = await unpacked;
      tl.mark("FROM unpacked");

      // 2. The prefix: the steps before the first COPY, by buildah. It and the skeleton are cut
      // from the Containerfile with kiln's label step placed, as kilnd's first build cuts them.
      const labels = kilnLabels({ project: app.name, source: app.repo, commit, committed });
      const labelled = await planLabels(join(ctx, "Containerfile"), undefined, labels, tmp);
      const split = splitContainerfile(readFileSync(labelled.containerfile, "utf8"), plan.after.length + 1);
      const prefixFile = join(tmp, "Prefix");
      writeFileSync(prefixFile, split.prefix);
      const empty = join(tmp, "empty");
      mkdirSync(empty, { recursive: true });
      const bud = async (file: string) => {
        const id = (await run("buildah", ["bud", "--pull=false", "--layers", "--format", "docker", "--network=host", "--file", file, "--", empty], penv)).split("\n").findLast((l) => /^[0-9a-f]{64}$/.test(l));
        if (!id) throw new Error(`buildah bud ${file}: no image ID`);
        return id;
      };
      const prefixId = await bud(prefixFile);
      report.release();
      const prefix = (await podman.inspectImage(prefixId))!;
      tl.mark("prefix built (FROM, WORKDIR, ENV)");

      // 3. kiln's RUN, the skeleton beside it.
      const skeletonFile = join(tmp, "Skeleton");
      writeFileSync(skeletonFile, split.skeleton);
      const skeletonBuilt = bud(skeletonFile).then(async (id) => {
        tl.mark("skeleton built");
        return JSON.parse((JSON.parse(await run("buildah", ["inspect", "--type", "image", id], penv)) as { Config: string }).Config) as ImageConfig;
      });
      const [first, second] = await copies;
      const ran = await runSteps({
        podman,
        parent: { id: prefix.id, env: prefix.config.Env ?? [], user: prefix.config.User ?? "", workdir: prefix.config.WorkingDir ?? "" },
        copy: first.entries,
        steps: [run0, { layer: second }],
        cacheDir: join(penv.TMPDIR!, "buildah-cache"),
        dir: join(tmp, "steps"),
        runc: async (args, locks) => {
          const c = runcCommand(args, locks);
          const r = await exec(c.file, c.args, { env: penv, timeoutMs: 600_000 });
          return { exitCode: r.exitCode, stderrTail: r.stderr.split("\n").slice(-10) };
        },
        secretFile: () => Promise.reject(new Error("no secrets in the prototype")),
        say: (line) => tl.mark(line),
        buildId: "cold-plan",
        maxBytes: 256 << 20,
        signal,
      });
      const runLayer = ran.layers[0]!;
      const runUpload = target.putBlob(runLayer.digest, runLayer.gz);
      tl.mark("RUN ran, its layer made");

      // 4. The config and the manifest.
      const skel = await skeletonBuilt;
      const steps: ({ copy: Layer; dest: string } | { run: RunStep; layer: Layer })[] = [
        { copy: first, dest: plan.dest },
        { run: run0, layer: runLayer },
        { copy: second, dest: later.copy.dest },
      ];
      const config = realConfig(skel, steps, prefix.config.Env ?? []);
      const configBytes = Buffer.from(JSON.stringify(config));
      await Promise.all([runUpload, target.putBlob(sha256(configBytes), configBytes)]);
      const made = [first, runLayer, second].map((l) => ({ mediaType: OCI_LAYER_GZIP, digest: l.digest, size: l.gz.length }));
      const manifest: OciManifest = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(configBytes), size: configBytes.length },
        layers: [...base.manifest.layers.map((l) => ({ ...l, mediaType: OCI_LAYER_GZIP })), ...made],
      } as OciManifest;
      const digest = await target.putManifest(commit, Buffer.from(JSON.stringify(manifest)), OCI_MANIFEST);
      tl.mark("pushed");
      engine.timeline = tl.lines as TimedLine[];
      return digest;
    },
    async reset() {
      await run("buildah", ["rm", "--all"], podman.env()).catch(() => "");
      await run("podman", ["system", "reset", "--force"], podman.env()).catch(() => "");
      await setUp();
    },
    async close() {},
  };
  return engine;
}

/** The skeleton's config with the real steps in place of its LABELs (their layers, their history lines). */
function realConfig(skel: ImageConfig, steps: ({ copy: Layer; dest: string } | { run: RunStep; layer: Layer })[], prefixEnv: string[]): ImageConfig {
  const config = structuredClone(skel);
  const labels = config.config?.Labels ?? {};
  for (const k of Object.keys(labels)) if (k.startsWith(`${PLACEHOLDER}.`)) delete labels[k];
  const history = config.history ?? [];
  let n = 0;
  for (const [i, h] of history.entries()) {
    if (!h.created_by?.includes(`LABEL "${PLACEHOLDER}.`)) continue;
    const s = steps[n++]!;
    const { empty_layer: _e, ...rest } = h;
    history[i] = {
      ...rest,
      created_by: "copy" in s ? `/bin/sh -c #(nop) COPY ${s.copy.diffId.replace("sha256:", "layer:")} in ${s.dest} ` : runHistory(s.run.history, s.run.args, [...prefixEnv, ...s.run.env.map(([k, v]) => `${k}=${v}`)]),
    };
  }
  config.rootfs = { ...config.rootfs, diff_ids: [...config.rootfs.diff_ids, ...steps.map((s) => ("copy" in s ? s.copy : s.layer).diffId)] };
  return config;
}

/** A cross-repository blob mount (the distribution spec's POST ?mount=&from=): the FROM layers without an upload. */
async function mountBlob(repo: string, digest: string): Promise<void> {
  const r = await fetch(`http://${REGISTRY}/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(BASE_REPO)}`, { method: "POST" });
  if (r.status !== 201) throw new Error(`mount of ${digest}: ${r.status}`);
}

async function main() {
  const work = join(ROOT, "bench/work");
  mkdirSync(work, { recursive: true });
  const env: BenchEnv = { root: ROOT, work, registry: REGISTRY };
  const hello = helloNode(ROOT, join(work, "cold-plan-apps"));
  const port = 5790 + Math.floor(Math.random() * 100);
  const kiln = await kilnEngine(env, { name: "kiln", dirName: "kiln-cold", port, fastPath: true });
  const buildkit = await buildkitEngine(env, "buildkit-cold");
  if ("skipped" in buildkit) throw new Error(`BuildKit: ${buildkit.skipped}`);
  const plan = await coldPlanEngine(env);
  const engines: Engine[] = [kiln, buildkit, plan];
  const samples = new Map<string, number[]>(engines.map((e) => [e.name, []]));
  const timelines = new Map<string, TimedLine[][]>();
  let commit = "";
  try {
    for (let i = 0; i < REPS; i++) {
      commit = hello.change();
      await Promise.all(engines.map((e) => e.reset()));
      say(`run ${i + 1}: file creation ${fileCreateMicros(work).toFixed(0)} µs`);
      for (const e of [...engines.slice(i % engines.length), ...engines.slice(0, i % engines.length)]) {
        const t0 = performance.now();
        await e.build(hello, commit);
        const ms = performance.now() - t0;
        samples.get(e.name)!.push(ms);
        timelines.set(e.name, [...(timelines.get(e.name) ?? []), e.timeline ?? []]);
        say(`  ${e.name.padEnd(10)} ${ms.toFixed(0).padStart(6)} ms`);
      }
    }
    // The prototype's last image against kiln's, of the same commit.
    const [mine, kilns] = await Promise.all([viewImage(REGISTRY, "bench/cold-plan-hello-node", commit), viewImage(REGISTRY, "bench/kiln-hello-node", commit)]);
    const differ: string[] = [];
    for (const p of new Set([...mine.files.keys(), ...kilns.files.keys()])) {
      if (JSON.stringify(mine.files.get(p)) !== JSON.stringify(kilns.files.get(p))) differ.push(`${p}: ${JSON.stringify(mine.files.get(p))} | kiln ${JSON.stringify(kilns.files.get(p))}`);
    }
    for (const k of ["Env", "Cmd", "Entrypoint", "User", "WorkingDir", "ExposedPorts", "Labels"]) {
      const a = JSON.stringify(mine.config.config?.[k]);
      const b = JSON.stringify(kilns.config.config?.[k]);
      if (a !== b) differ.push(`config ${k}: ${a} | kiln ${b}`);
    }
    const shown = (c: ImageConfig) => (c.history ?? []).map((h) => `${h.empty_layer ? "-" : "+"} ${(h.created_by ?? "").replace(/(COPY )(dir|file|multi|layer):[0-9a-f]+/, "$1…")}`);
    const [ha, hb] = [shown(mine.config), shown(kilns.config)];
    ha.forEach((h, i) => h !== hb[i] && differ.push(`history ${i}: ${h} | kiln ${hb[i]}`));
    if (ha.length !== hb.length) differ.push(`history: ${ha.length} entries | kiln ${hb.length}`);
    say(`\nthe prototype's image against kiln's cold image of ${commit.slice(0, 12)}: ${mine.files.size} paths, ${differ.length === 0 ? "the same paths, owners, modes, contents and config fields" : `${differ.length} differences:\n  ${differ.slice(0, 30).join("\n  ")}`}`);
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    say("");
    for (const [name, xs] of samples) say(`${name.padEnd(10)} ${xs.map((x) => x.toFixed(0)).join(", ")} ms; median ${med(xs).toFixed(0)}`);
    const bk = med(samples.get("buildkit")!);
    say(`kiln / BuildKit ${(med(samples.get("kiln")!) / bk).toFixed(2)}; cold plan / BuildKit ${(med(samples.get("cold-plan")!) / bk).toFixed(2)}`);
    say(`per run, cold plan / BuildKit: ${samples.get("cold-plan")!.map((x, i) => (x / samples.get("buildkit")![i]!).toFixed(2)).join(", ")}`);
    const tls = timelines.get("cold-plan")!;
    const at = tls[samples.get("cold-plan")!.indexOf(med(samples.get("cold-plan")!))]!;
    say("\nthe cold plan's median run:");
    for (const l of at) say(`  ${l.ms.toFixed(0).padStart(6)} ms  ${l.text}`);
  } finally {
    await Promise.all(engines.map((e) => e.close()));
  }
}

await main();
