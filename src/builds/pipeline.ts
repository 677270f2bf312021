// One build, phase after phase, each timed: fetch the commit into the git cache and check it
// out, wait for a build slot, podman build on the warm cache, push to the registry.
import { mkdir, readFile, stat, symlink } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { BaseImageSchema, Phase, PhaseDurationsSchema } from "../gen/kiln/v1/builder_pb.js";
import { KilnError } from "../errors/kiln-error.js";
import type { FastPath, FastPathInput, FastPathResult } from "../fastpath/fast-path.js";
import { FastPathRefused } from "../fastpath/refused.js";
import type { Checkout, GitCache } from "../git/cache.js";
import { changedFiles } from "../git/diff.js";
import { gitEnv } from "../git/env.js";
import { buildCommand, IMAGE_ID_LINE, SECRET_LIKE_ARG, type BuildEngineName } from "../podman/build-command.js";
import type { Podman } from "../podman/podman.js";
import { kilnLabels } from "../podman/kiln-labels.js";
import { planLabels } from "../podman/labels.js";
import { createLayerStepWatch, createStepCounter } from "../podman/step-counter.js";
import { createStageTracker, stageTag } from "../podman/stage-images.js";
import { runcCommand } from "../podman/runc.js";
import { LAYER_STORE_NOTICE } from "../images/layer-store.js";
import { durationFromMs, msFromDuration } from "../util/time.js";
import { resolveInside } from "../validate/repo-path.js";
import { prepareBuildSecrets, type BuildSecrets, type BuildSecretsDeps } from "../secrets/build-secrets.js";
import { authRefusal, registryRefusal } from "../registry/refusal.js";
import { RegistryAuthError } from "../registry/auth.js";
import type { ResolvedBases } from "../images/resolve.js";
import { StopSignal, type ActiveBuild } from "./active-build.js";
import { errorSummary } from "../process/exec.js";
import { buildExec } from "./exec.js";
import { pushBuilt, pushDeadlineMs, type DirectPush } from "./push.js";
import type { EarlyUploads } from "./direct-push.js";
import { RegistryClient } from "../registry/client.js";
import { BLOB_NOTES_DIR, createBlobNotes } from "../registry/blob-notes.js";
import type { Slots } from "../util/slots.js";

export interface PipelineDeps {
  git: GitCache;
  podman: Podman;
  /** kiln's fast path, when kilnd runs with it. */
  fastPath?: FastPath;
  slots: Slots;
  /** Network mode for RUN steps (podman build --network). */
  buildNetwork: string;
  buildEngine: BuildEngineName;
  imageFormat: "docker" | "oci";
  insecureRegistries: ReadonlySet<string>;
  /** Where secrets and credentials come from and go for the build's time. */
  secrets: BuildSecretsDeps;
  save(a: ActiveBuild): Promise<void>;
  /** Called once the build holds a slot, before podman starts (sweeps, the reset check). */
  beforeBuild(): Promise<void>;
  /** podman ran out of space: true if space was made and the build may run once more. */
  onNoSpace(): Promise<boolean>;
  /** The push's deadline before its bytes are counted in (builds/push.ts). */
  pushTimeoutSec: number;
  /** kiln pushes full builds from storage's files (podman when it cannot), or podman always. */
  pushEngine: "kiln" | "podman";
}

// The build process's Go runtime: no collection until the heap nears 2 GiB. A warm build
// allocates little and is done before a collection would pay off (measured: about 8 % faster);
// a large cold build still collects.
const BUILD_GO_ENV = { GOGC: "off", GOMEMLIMIT: "2GiB" };

// A step's start in buildah's output, and how much of a failing step's output its error keeps.
const STEP_LINE = /^(?:\[\d+\/\d+\] )?STEP \d+\/\d+: /;
const STEP_TAIL = 5;

export async function runPipeline(a: ActiveBuild, deps: PipelineDeps): Promise<void> {
  const secrets = await prepareBuildSecrets(a.id, a.spec, a.masker, deps.secrets);
  try {
    await phases(a, deps, secrets);
  } finally {
    await secrets.remove();
  }
}

async function phases(a: ActiveBuild, deps: PipelineDeps, secrets: BuildSecrets): Promise<void> {
  const rec = a.record;
  const durations = (rec.durations ??= create(PhaseDurationsSchema));

  // fetch: commit into the cache, tree into the checkout, paths checked against the checkout
  a.enter(Phase.FETCH);
  a.say(`fetch: ${a.spec.commit} from ${a.spec.git.redacted}`);
  const git = (args: string[], quiet?: boolean) => buildExec(a, "git", "git", args, gitEnv(deps.podman.env(), a.spec.git), { quiet: quiet ?? false });
  const f0 = Date.now();
  const outcome = await deps.git.ensureCommit(a.spec.project, a.spec.git, a.spec.commit, git);
  const diff = changedFiles(deps.git.repoOf(a.spec.project), { env: gitEnv(deps.podman.env()), signal: a.abort.signal });
  const { dir: checkout, changed, committed } = await deps.git.checkout(a.spec.project, a.spec.commit, git, diff);
  const contextDir = await resolveInside(checkout, a.spec.context, "context");
  if (!(await stat(contextDir)).isDirectory()) throw new KilnError("failed_precondition", `context: ${JSON.stringify(a.spec.context)} is not a directory in the commit`);
  const containerfile = await findContainerfile(checkout, a);
  durations.fetch = durationFromMs(Date.now() - f0);
  a.say(`fetch: ${outcome.fetched ? "fetched" : "in cache"}, checked out in ${Date.now() - f0} ms`);
  a.accepted.resolve();

  // wait for a build slot
  const release = await deps.slots.acquire(a.abort.signal);
  // The final stage's layers sent while buildah runs (builds/direct-push.ts): stopped when the build ends.
  let early: EarlyUploads | undefined;
  try {
    if (a.abort.signal.aborted) throw new StopSignal();
    a.markRunning();
    a.enter(Phase.BUILD);
    await deps.save(a);

    const tag = `${a.spec.image.repository}:${a.spec.commit}`;
    rec.image = tag;
    const labels = kilnLabels({ project: a.spec.project, source: a.spec.git.redacted, commit: a.spec.commit, committed });
    for (const name of Object.keys(a.spec.buildArgs)) {
      if (SECRET_LIKE_ARG.test(name)) a.say(`warning: build arg ${name} looks like a secret; build args are kept in the image's history: pass it in the request's secrets and read it with RUN --mount=type=secret,id=${name}`);
    }
    // The FROM images, looked up at their registries: a moved tag is built on, in both paths.
    // Loaded on first use (the Containerfile parser is not part of kilnd's start-up).
    const { resolveBases } = await import("../images/resolve.js");
    const bases = await resolveBases(await readFile(containerfile, "utf8"), a.spec.buildArgs, { credentials: secrets.credentials, insecure: deps.insecureRegistries, signal: a.abort.signal });
    rec.baseImages = bases.images.map((b) => create(BaseImageSchema, b));
    for (const b of bases.images) a.say(`base: ${b.reference} is ${b.digest}`);
    for (const u of bases.unresolved) a.say(`base: ${u} not looked up${bases.pullIfNewer ? "; buildah pulls what the registry has newer" : ""}`);
    const registry = a.spec.image.registry;
    const fast = deps.fastPath && registry ? fastPathInput(a, deps, registry, secrets, bases, { checkout, changed, contextDir, containerfile, labels }) : undefined;
    const fastPath = deps.fastPath;
    if (fast && fastPath && (await tryKilnBuild(a, "fast path", (onMade, onCommit) => fastPath.build(fast, onMade, onCommit)))) {
      return;
    }
    await deps.beforeBuild();

    // build
    const b0 = Date.now();
    await mkdir(a.tmpDir, { recursive: true });
    await linkCacheMounts(a.tmpDir, deps.podman.layout.cacheMountDir);
    let buildahSecrets: { id: string; src: string }[] = [];
    let mounted: string[] = [];
    const plan = await planLabels(containerfile, a.spec.target, labels, a.tmpDir, async (text) => {
      const m = await secrets.mounts(text, a.spec.containerfile ?? "Containerfile");
      buildahSecrets = m.secrets;
      mounted = m.used;
      if (m.used.length > 0) a.say(`secrets: ${m.used.join(", ")} mounted for RUN (masked in this log; a step that mounts one runs again when its value changes)`);
      return bases.pin(m.text);
    });
    const unused = Object.keys(a.spec.secrets).filter((id) => !mounted.includes(id));
    if (unused.length > 0) a.say(`secrets: ${unused.join(", ")} given but mounted by no RUN step`);
    const podmanEnv = { ...deps.podman.env(a.tmpDir), ...secrets.env };
    // The build's flags, secrets included; a first build's prefix and skeleton get the same (below).
    const flags = { contextDir, network: deps.buildNetwork, buildArgs: a.spec.buildArgs, ...(a.spec.target ? { target: a.spec.target } : {}), secrets: buildahSecrets, pullIfNewer: bases.pullIfNewer, format: deps.imageFormat };
    const cmd = buildCommand(deps.buildEngine, { ...flags, containerfile: plan.containerfile, tag, labels: plan.flagLabels });
    // kiln's push, and the final stage's new layers sent while buildah runs the steps after them.
    const pushing = registry && deps.pushEngine === "kiln" ? await directPush(a, deps, registry, secrets, bases) : undefined;
    early = pushing && !a.spec.target ? (await import("./direct-push.js")).createEarlyUploads({ ...pushing, signal: a.abort.signal, deadlineMs: (bytes) => pushDeadlineMs(deps.pushTimeoutSec, bytes) }) : undefined;
    let stagesOf = createStageTracker();
    // buildah's last line is the built image's full ID (build-command.ts).
    let lastImageId = "";
    // The output of the step running now: the end of it goes into a failed build's error.
    let stepOutput: string[] = [];
    const podmanBuild = async () => {
      const counter = createStepCounter(new Set(Object.keys(labels)));
      stagesOf = createStageTracker();
      const watching = early;
      const layers = watching ? createLayerStepWatch((id) => watching.committed(id)) : undefined;
      a.say(`build: ${cmd.shown}`);
      const r = await buildExec(a, "podman", cmd.file, cmd.args, { ...podmanEnv, ...BUILD_GO_ENV }, {
        hide: LAYER_STORE_NOTICE,
        onLine(line) {
          counter.line(line);
          stagesOf.line(line);
          layers?.line(line);
          if (IMAGE_ID_LINE.test(line)) lastImageId = line;
          if (STEP_LINE.test(line)) stepOutput = [];
          else if (line.trim() && !line.startsWith("Error:")) stepOutput = [...stepOutput.slice(-(STEP_TAIL - 1)), line.slice(0, 300)];
        },
      });
      rec.stepsTotal = counter.counts.total;
      rec.stepsCached = counter.counts.cached;
      return r;
    };
    // The FROM images' layers storage lacks, unpacked by kiln side by side; buildah's pull links them.
    const unpacked = await deps.podman.baseLayers
      .ensure(bases.images, { credentials: secrets.credentials, insecure: deps.insecureRegistries, signal: a.abort.signal, env: deps.podman.env(), say: (l) => a.say(`base: ${l}`) })
      .catch((e: unknown) => {
        throw a.abort.signal.aborted ? new StopSignal() : e;
      });
    let built: Awaited<ReturnType<typeof podmanBuild>>;
    try {
      // A FROM image new to storage: no step can come from buildah's cache, so kiln runs what it can itself.
      const [fresh] = unpacked.fresh;
      if (fast && fastPath && fresh && bases.images.length === 1 && Object.keys(plan.flagLabels).length === 0) {
        const labelled = await readFile(plan.containerfile, "utf8");
        const bud = async (file: string, tag: string, onLine: (line: string) => void, quiet: boolean) => {
          // The full build's flags, secrets included: a step buildah runs here is cached for the full builds after.
          const c = buildCommand(deps.buildEngine, { ...flags, containerfile: file, tag, labels: {} });
          let id = "";
          const r = await buildExec(a, "podman", c.file, c.args, { ...podmanEnv, ...BUILD_GO_ENV }, { quiet, hide: LAYER_STORE_NOTICE, onLine: (line) => ((id = IMAGE_ID_LINE.test(line) ? line : id), onLine(line)) });
          if (r.exitCode !== 0 || !id) throw new FastPathRefused(`${c.file} ${c.args[0]} of ${file.slice(a.tmpDir.length + 1)} failed: ${errorSummary(r)}`);
          return id;
        };
        let after: (() => Promise<string>) | undefined;
        const firstBuilt = await tryKilnBuild(a, "first build", async (onMade, onCommit) => {
          const b = await fastPath.first({ fast, labelled, from: fresh, docker: deps.imageFormat === "docker", bud }, onMade, onCommit);
          after = b.afterward;
          return b.result;
        });
        if (firstBuilt) {
          if (after) a.afterward = async () => `fast path: ${await after!()}`;
          return;
        }
      }
      built = await podmanBuild();
      if (built.exitCode !== 0 && built.stderrTail.some((l) => /no space left on device/i.test(l)) && (await deps.onNoSpace())) {
        // A build never fails for a full disk that kiln could have freed.
        a.say("build: out of space; container storage was reset, building again from cold");
        built = await podmanBuild();
      }
    } finally {
      unpacked.release();
    }
    durations.build = durationFromMs(Date.now() - b0);
    if (built.exitCode !== 0) {
      const tail = stepOutput.length > 0 ? `; the step's last output: ${stepOutput.join(" | ")}` : "";
      throw registryRefusal(built.stderrTail, "pull") ?? new KilnError("failed_precondition", `${cmd.file} ${cmd.args[0]} failed: ${errorSummary(built)}${tail}`);
    }
    if (!lastImageId) throw new KilnError("internal", `${cmd.file} ${cmd.args[0]} succeeded without printing the image's ID`);
    rec.imageId = `sha256:${lastImageId}`;
    a.say(`build: ${rec.imageId} in ${Date.now() - b0} ms, ${rec.stepsCached}/${rec.stepsTotal} steps from cache`);
    // The earlier stages' images are this build's too: tagged, the prune keeps them while it keeps the commit's image (beside the push).
    const stages = stagesOf.earlierStages();
    const tagged = Promise.all(stages.map((s) => deps.podman.tag(s.image, [stageTag(a.spec.project, a.spec.commit, s.stage)])));

    // push
    if (registry) {
      a.enter(Phase.PUSH);
      const p0 = Date.now();
      // Saved before podman starts: a kilnd killed mid-push leaves a record that says PUSH.
      await deps.save(a);
      const direct = pushing ? { ...pushing, imageId: rec.imageId, ...(early ? { early } : {}) } : undefined;
      rec.imageDigest = await pushBuilt(a, { podman: deps.podman, env: podmanEnv, registry, tag, insecure: deps.insecureRegistries.has(registry), format: deps.imageFormat, timeoutSec: deps.pushTimeoutSec }, direct);
      durations.push = durationFromMs(Date.now() - p0);
      rec.pushed = true;
      a.say(`push: ${tag}@${rec.imageDigest} in ${Date.now() - p0} ms`);
      // Off the critical path: the fast path reads the pushed image back after the result (engine.ts).
      if (fast && deps.fastPath) {
        const { fastPath } = deps;
        const [digest, asFlags, stages] = [rec.imageDigest, Object.keys(plan.flagLabels).length > 0, stagesOf];
        a.afterward = async () => `fast path: ${await fastPath.record(fast, digest, asFlags, stages)}`;
      }
    }
    if ((await tagged).includes(false)) a.say("build: an earlier stage's image could not be tagged; the prune may take its cache");
  } finally {
    early?.stop();
    release();
  }
}

/** kiln's own push of the image buildah will make (builds/direct-push.ts): to the build's repository, FROM layers mounted from theirs. */
async function directPush(a: ActiveBuild, deps: PipelineDeps, registry: string, secrets: BuildSecrets, bases: ResolvedBases): Promise<Omit<DirectPush, "imageId">> {
  // Loaded already by the base look-up (resolve.js), as the parser it comes with.
  const { parseImageName } = await import("../images/base-images.js");
  const repo = a.spec.image.repository.slice(registry.length + 1);
  const mountFrom = [...new Set(bases.images.map((b) => parseImageName(b.reference)).filter((n) => n?.registry === registry && n.repository !== repo).map((n) => n!.repository))];
  const { graphRoot } = deps.podman.layout;
  return {
    graphRoot,
    client: (signal) => new RegistryClient(registry, repo, deps.insecureRegistries.has(registry), { credential: () => secrets.credentials.lookup(registry, repo), signal, mountFrom }),
    tag: a.spec.commit,
    format: deps.imageFormat,
    notes: createBlobNotes(join(graphRoot, BLOB_NOTES_DIR)),
    mountFrom,
    storedBlob: (digest) => deps.podman.baseLayers.blobPath(digest),
  };
}

function fastPathInput(
  a: ActiveBuild,
  deps: PipelineDeps,
  registry: string,
  secrets: BuildSecrets,
  bases: ResolvedBases,
  at: { checkout: string; changed: Checkout["changed"]; contextDir: string; containerfile: string; labels: Record<string, string> },
): FastPathInput {
  return {
    project: a.spec.project,
    commit: a.spec.commit,
    registry,
    repository: a.spec.image.repository,
    containerfile: a.spec.containerfile ?? "",
    context: a.spec.context,
    target: a.spec.target ?? "",
    buildArgs: a.spec.buildArgs,
    secrets: [...secrets.digests].sort(([x], [y]) => (x < y ? -1 : 1)),
    engine: `${deps.buildEngine}:${deps.imageFormat}`,
    credentials: secrets.credentials,
    signal: a.abort.signal,
    baseImages: bases.unresolved.length > 0 ? undefined : bases.images,
    gitDir: deps.git.repoOf(a.spec.project),
    checkout: at.checkout,
    ...(at.changed ? { changed: at.changed } : {}),
    contextDir: at.contextDir,
    containerfilePath: at.containerfile,
    labels: at.labels,
    env: gitEnv(deps.podman.env()),
    buildId: a.id,
    tmpDir: a.tmpDir,
    // A RUN step kiln runs is a process of the build like podman's: logged, and a cancel kills
    // the runc containers under the build's directory (builds/stop.ts).
    runc: (args, locks) => {
      const c = runcCommand(args, locks);
      return buildExec(a, "podman", c.file, c.args, deps.podman.env(a.tmpDir));
    },
    secretFile: (id, mode, uid, gid) => secrets.runFile(id, mode, uid, gid),
    say: (line) => a.say(line),
  };
}

/**
 * A build by kiln itself (the fast path, or a first build), if it can be sure of it: true once
 * the image is pushed; false when it stepped aside, and the full build runs.
 */
async function tryKilnBuild(a: ActiveBuild, what: "fast path" | "first build", run: (onMade: (ms: number) => void, onCommit: () => void) => Promise<FastPathResult & { prefixSteps?: number }>): Promise<boolean> {
  const rec = a.record;
  const durations = rec.durations!;
  const f0 = Date.now();
  try {
    let committed = false;
    const building = run(
      (madeMs) => {
        durations.build = durationFromMs(madeMs);
        a.enter(Phase.PUSH);
        a.say(`${what}: layers made in ${madeMs} ms; pushing`);
      },
      () => (committed = true),
    );
    // A cancel answers at once (making a large layer is not interruptible), unless the tag is
    // already being written: then the build is done, and says so. The abandoned work cannot push.
    building.catch(() => {});
    const r = await Promise.race([building, abortedUnless(a.abort.signal, () => committed, building)]);
    durations.push = durationFromMs(Date.now() - f0 - msFromDuration(durations.build));
    rec.imageId = r.imageId;
    rec.imageDigest = r.digest;
    rec.pushed = true;
    rec.fastPath = true;
    rec.firstBuild = what === "first build";
    rec.stepsTotal = r.steps.total;
    rec.stepsCached = r.steps.reused;
    a.say(
      r.prefixSteps !== undefined
        ? `first build: buildah built the ${r.prefixSteps} step${r.prefixSteps === 1 ? "" : "s"} before the first COPY; kiln made ${r.made - r.ran} COPY layer${r.made - r.ran === 1 ? "" : "s"} and ran ${r.ran} RUN step${r.ran === 1 ? "" : "s"} (${r.files} entries, ${r.bytes} bytes) in ${msFromDuration(durations.build)} ms; buildah wrote the config beside them`
        : r.same
        ? `fast path: this commit was the last build's, with this request: the image is that build's own, as its tag has it (${r.steps.total} steps from cache, nothing to push)`
        : r.reused
        ? `fast path: no step reads a file that changed since the last full build: every layer is its own (${r.steps.total} steps from cache), with this build's labels`
        : r.startedAt !== undefined
          ? `fast path: started from step ${r.startedAt}, the first COPY that reads a changed file: made ${r.made - r.ran} COPY layer${r.made - r.ran === 1 ? "" : "s"} and ran ${r.ran} RUN step${r.ran === 1 ? "" : "s"} (${r.files} entries, ${r.bytes} bytes) in ${msFromDuration(durations.build)} ms; every layer below is the last build's`
        : r.stage !== undefined
          ? `fast path: reran stage ${r.stage}'s final COPY and its ${r.ran} RUN step${r.ran === 1 ? "" : "s"}, and made the final COPY --from's layer (${r.files} entries, ${r.bytes} bytes) in ${msFromDuration(durations.build)} ms; every layer below is the last build's`
          : r.ran > 0
          ? `fast path: made the final COPY's layer and ran the ${r.ran} RUN step${r.ran > 1 ? "s" : ""} after it (${r.files} entries, ${r.bytes} bytes) in ${msFromDuration(durations.build)} ms; every layer below is the last build's`
          : `fast path: made the final COPY's layer (${r.files} entries, ${r.bytes} bytes) in ${msFromDuration(durations.build)} ms; every other layer is the last build's`,
    );
    a.say(`push: ${rec.image}@${r.digest} in ${msFromDuration(durations.push)} ms`);
    return true;
  } catch (e) {
    if (a.abort.signal.aborted) throw new StopSignal();
    a.enter(Phase.BUILD);
    if (e instanceof StopSignal) throw e;
    // A registry that refuses these credentials refuses podman's push as well: no second try.
    if (e instanceof RegistryAuthError) throw authRefusal(e);
    a.say(`${what}: ${e instanceof FastPathRefused ? "not taken" : "failed"}: ${(e as Error).message}; full build`);
    return false;
  }
}

/** Rejects with StopSignal when the signal aborts, unless done() says the work can no longer stop: then waits for it. */
function abortedUnless<T>(signal: AbortSignal, done: () => boolean, work: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const onAbort = () => (done() ? work.then(resolve, reject) : reject(new StopSignal()));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    work.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => {});
  });
}

/**
 * buildah keeps RUN --mount=type=cache directories in $TMPDIR/buildah-cache. Every build has a
 * TMPDIR of its own (that is how its RUN containers are found on cancel), so that name is
 * pointed at one directory in container storage, which all builds share and which survives them.
 */
async function linkCacheMounts(tmpDir: string, cacheMountDir: string): Promise<void> {
  await mkdir(cacheMountDir, { recursive: true });
  await symlink(cacheMountDir, join(tmpDir, "buildah-cache"));
}

/** The Containerfile named by the request, else Containerfile or Dockerfile in the context. */
async function findContainerfile(checkout: string, a: ActiveBuild): Promise<string> {
  if (a.spec.containerfile) return resolveInside(checkout, a.spec.containerfile, "containerfile");
  for (const name of ["Containerfile", "Dockerfile"]) {
    try {
      return await resolveInside(checkout, join(a.spec.context, name), "containerfile");
    } catch (e) {
      if (!(e instanceof KilnError && e.code === "failed_precondition")) throw e;
    }
  }
  throw new KilnError("failed_precondition", `containerfile: neither Containerfile nor Dockerfile is in ${JSON.stringify(a.spec.context)} of the commit`);
}
