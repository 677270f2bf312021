// kiln's fast path. Git says exactly which files changed since the project's last full build
// (and the Containerfile, the ignore file and the request must be the same). When no step reads
// any of them, every layer is the one already in the registry: kiln writes the image config with
// its new labels and the manifest, for any Containerfile whose reads it can list. When only the
// final COPY reads them, every layer below it is the registry's: kiln makes the COPY's layer
// itself, runs the plain RUN steps after it (run-steps.ts: runc on overlays of the image below
// the COPY, which the last full build left in podman's storage), and pushes the new blobs.
// Whenever it cannot be sure, it says why and the full build runs. test/integration/fast-path.test.ts
// and fast-path-starts.test.ts hold it to a full build's filesystem and config on several apps
// and kinds of change.
import { lstat, readFile } from "node:fs/promises";
import { join, posix } from "node:path";
import dockerignore from "@balena/dockerignore";
import { KILN_LABEL_STEP } from "../podman/kiln-labels.js";
import { labelLine } from "../podman/labels.js";
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RegistryClient, sha256, type OciManifest } from "../registry/client.js";
import type { RegistryCredentials } from "../registry/credentials.js";
import type { ParentImage, StepToRun } from "./run-steps.js";
import { baseKey, type BaseKeyInput, type BaseStore, type CopyBase, type CopyTarget, type FastPathBase, type ImageConfig } from "./base.js";
import { isCopyStep, type CopyPlan, type RunStep, type StagePlan } from "./plan.js";
import { laterStarts } from "./later-starts.js";
import { runHistory } from "./build-args.js";
import { FastPathRefused } from "./refused.js";
import type { TarEntry } from "../image/tar-entries.js";
import type { Checkout } from "../git/cache.js";
import type { LocalImage, Podman } from "../podman/podman.js";
import type { Layer } from "./layer.js";
import type { FirstBuild, FirstBuildInput } from "./first-build.js";
import { parseImageName } from "../images/base-images.js";

// The package is CommonJS (module.exports = factory) while its types declare an ES default export.
const ignore = dockerignore as unknown as typeof dockerignore.default;

/** The largest final layer the fast path reads back or makes (bigger ones take the full build). */
export const MAX_LAYER_BYTES = 64 * 1024 * 1024;
/** The most a RUN step kiln runs may write (it is held in memory to be compressed). */
export const MAX_RUN_LAYER_BYTES = 256 * 1024 * 1024;
const IGNORE_FILES = [".containerignore", ".dockerignore"];
/** A --chown of numbers: the same owner whatever the image's /etc/passwd and /etc/group say. */
const NUMERIC_OWNER = /^\d+(:\d+)?$/;

export interface FastPathInput extends BaseKeyInput {
  project: string;
  commit: string;
  registry: string;
  /** The bare git repository of the project's cache. */
  gitDir: string;
  /** The checkout, the context in it and the Containerfile's absolute path. */
  checkout: string;
  /** The files the checkout found changed since the commit it held before (changes.ts uses them when that is the base's). */
  changed?: Checkout["changed"];
  contextDir: string;
  containerfilePath: string;
  /** kiln's labels for this build, in the order the full build writes them. */
  labels: Record<string, string>;
  env: Record<string, string>;
  /** The build's registry credentials (the request's and kilnd's auth file). */
  credentials: RegistryCredentials;
  /** The build's abort signal: git, the registry client and the push stop with it. */
  signal: AbortSignal;
  /** Each FROM image's digest now; undefined when kiln could not resolve them all. */
  baseImages: { reference: string; digest: string }[] | undefined;
  /** The build's id and its own directory on the volume (the RUN steps' overlays go there). */
  buildId: string;
  tmpDir: string;
  /** Runs `runc <args>` as one of the build's processes (its output in the log, stopped by a cancel), holding the lock files' locks. */
  runc(args: string[], locks: string[]): Promise<{ exitCode: number; stderrTail: string[] }>;
  /** A file on tmpfs holding the request's secret id for a RUN's secret mount, with its mode and owner. */
  secretFile(id: string, mode: number, uid: number, gid: number): Promise<string>;
  say(line: string): void;
}

export interface FastPathResult {
  digest: string;
  /** No step read a changed file: every layer is the last full build's. */
  reused: boolean;
  /** The commit the last build was: the image is that build's, as the tag has it (nothing pushed). */
  same?: boolean;
  /** RUN steps kiln ran after the COPY it started from (or after the final COPY of stage, when there is one). */
  ran: number;
  /** Layers kiln made (its COPYs' and RUN steps'). */
  made: number;
  /** The final stage's step kiln started from, when it is not the final COPY (buildah's numbering: FROM is 1). */
  startedAt?: number;
  /** The earlier stage (1-based) kiln rebuilt for the final COPY --from. */
  stage?: number;
  steps: { total: number; reused: number };
  /** The config's digest: what podman calls the image ID. */
  imageId: string;
  files: number;
  bytes: number;
}

export interface FastPathOptions {
  bases: BaseStore;
  insecureRegistries: ReadonlySet<string>;
  /** The image below the final COPY is mounted from podman's storage to run the RUN steps after it. */
  podman: Pick<Podman, "inspectImage" | "dockerShell" | "mountImage" | "unmountImage" | "env" | "storedConfig" | "baseLayers">;
  /** kilnd's --build-network: kiln runs RUN steps itself only on the host's network, as buildah does then. */
  buildNetwork: string;
  /** The cache-mount directory every build's buildah uses ($TMPDIR/buildah-cache). */
  cacheDir: string;
}

export function createFastPath(o: FastPathOptions) {
  const clientFor = (input: FastPathInput, mountFrom: string[] = []) => {
    const repo = input.repository.slice(input.registry.length + 1);
    return new RegistryClient(input.registry, repo, o.insecureRegistries.has(input.registry), {
      credential: () => input.credentials.lookup(input.registry, repo),
      signal: input.signal,
      mountFrom,
    });
  };

  /**
   * After a successful full build and push: remembers it as the project's base, or forgets the
   * old base when this build cannot be one. Says what the next build can start from.
   */
  async function record(input: FastPathInput, digest: string, labelsAsFlags: boolean, images: StepImages = NO_STEP_IMAGES): Promise<string> {
    try {
      if (labelsAsFlags) throw new FastPathRefused("kiln's labels went as --label flags");
      if (!input.baseImages) throw new FastPathRefused("a FROM image could not be looked up at its registry");
      const [{ planFastPath, planReads, planStageCopy, contextCopies }, { readLayer }] = await Promise.all([import("./plan.js"), import("../image/tar-entries.js")]);
      const text = await readFile(input.containerfilePath, "utf8");
      const reads = planReads(text, input.target || undefined);
      // The RUN steps as buildah ran them: with kiln's secret mounts keyed on the secrets' digests (secret-mounts.ts).
      const { planSecretMounts } = await import("../secrets/secret-mounts.js");
      const keyed = planSecretMounts(text, new Map(input.secrets)).text;
      const planOptions = { buildArgs: input.buildArgs, docker: input.engine.endsWith(":docker") };
      if (!reads.ok) throw new FastPathRefused(reads.reason);
      const registry = clientFor(input);
      const { manifest } = await registry.getManifest(digest);
      const config = JSON.parse((await registry.getBlob(manifest.config.digest)).toString("utf8")) as ImageConfig;
      checkLayers(manifest, config);
      // A base's ONBUILD triggers run right after FROM and may read the context: kiln does not see them.
      const triggers = (config.history ?? []).filter((h) => /(^|#\(nop\)\s+)ONBUILD\s/.test(h.created_by ?? "")).length;
      if (triggers > reads.plan.onbuild) throw new FastPathRefused("the base image has ONBUILD triggers");
      let copy: FastPathBase["copy"];
      try {
        const planned = planFastPath(keyed, input.target || undefined, undefined, planOptions);
        if (planned.ok) {
          copy = await copyBase(input, planned.plan, manifest, config, registry, readLayer, images);
        } else {
          // The final COPY may be a COPY --from an earlier stage that kiln can rebuild.
          const staged = planStageCopy(keyed, input.target || undefined, planOptions);
          if (!staged.ok) throw new FastPathRefused(staged.reason === "one stage" || /is not a COPY --from a stage/.test(staged.reason) ? planned.reason : `${planned.reason}; ${staged.reason}`);
          copy = await copyBase(input, staged.plan.copy, manifest, config, registry, readLayer, images, staged.plan);
        }
      } catch (e) {
        if (!(e instanceof FastPathRefused)) throw e;
        copy = { refused: e.message };
      }
      // Earlier COPYs of the final stage to start from, the latest first (each checked as the final one is).
      const starts: CopyBase[] = [];
      const notFrom: string[] = [];
      for (let k = contextCopies(text) - 2; k >= 0; k--) {
        const planned = planFastPath(keyed, input.target || undefined, k, planOptions);
        try {
          if (!planned.ok) throw new FastPathRefused(planned.reason);
          starts.push(await copyBase(input, planned.plan, manifest, config, registry, readLayer, images));
        } catch (e) {
          if (!(e instanceof FastPathRefused)) throw e;
          notFrom.push(`COPY ${k + 1}: ${e.message}`);
        }
      }
      await o.bases.save(input.project, {
        key: baseKey(input),
        commit: input.commit,
        containerfileDigest: sha256(text),
        ignoreDigest: await ignoreDigest(input.contextDir),
        reads: reads.plan,
        copy,
        starts,
        manifest,
        config,
        baseImages: input.baseImages,
      });
      const earlier =
        starts.length > 0
          ? `; a change an earlier step reads starts from ${starts.length === 1 ? "an earlier COPY" : `one of ${starts.length} earlier COPYs`}${notFrom.length > 0 ? ` (not from ${notFrom.join("; ")})` : ""}`
          : notFrom.length > 0
            ? `; a change an earlier step reads takes the full build (${notFrom.join("; ")})`
            : "";
      return ("refused" in copy
        ? `the next build whose change no step reads reuses this image; a change a step reads takes the full build (${copy.refused})`
        : copy.from
          ? `the next build of a source change can start from this one (kiln reruns stage ${copy.from.stage + 1}'s final COPY and its ${copy.from.plan.after.length} RUN step${copy.from.plan.after.length === 1 ? "" : "s"}, then makes the COPY --from's layer)`
          : copy.plan.after.length > 0
          ? `the next build of a source change can start from this one (kiln runs the ${copy.plan.after.length} RUN step${copy.plan.after.length > 1 ? "s" : ""} after the final COPY)`
          : "the next build of a source change can start from this one") + earlier;
    } catch (e) {
      // Registry trouble included: without a base the next build is a full one, never a wrong one.
      await o.bases.remove(input.project, (e as Error).message);
      return `not available after this build: ${(e as Error).message}`;
    }
  }

  /**
   * What starting from this COPY needs, read from the last full build's own layers (its own and
   * those of the COPYs after it); with RUN steps after it, the image below it.
   */
  async function copyBase(
    input: FastPathInput,
    plan: CopyPlan,
    manifest: OciManifest,
    config: ImageConfig,
    registry: RegistryClient,
    readLayer: (blob: Buffer) => Promise<TarEntry[]>,
    images: StepImages,
    staged?: StagePlan,
  ): Promise<CopyBase> {
    const n = plan.after.length;
    const withLayers = (config.history ?? []).filter((h) => !h.empty_layer);
    if (!/\bCOPY\b/.test(withLayers.at(-1 - n)?.created_by ?? "")) throw new FastPathRefused(n ? "the image's layer below its later steps is not the COPY's" : "the image's last layer is not the final COPY's");
    const copyIndex = manifest.layers.length - 1 - n;
    const runs = plan.after.some((step) => !isCopyStep(step));
    const parent = runs ? await parentImage(plan, config, input, images.finalStageStep(plan.copyStep - 1), (image) => JSON.stringify(image.layers) === JSON.stringify(config.rootfs.diff_ids.slice(0, copyIndex))) : undefined;
    plan.after.forEach((step, k) => {
      // buildah's history names each RUN's command (its flags, the ARG values it saw): kiln must read it the same way.
      const shown = withLayers.at(k - n)?.created_by ?? "";
      if (isCopyStep(step) ? !/^\/bin\/sh -c #\(nop\) COPY /.test(shown) : shown !== shownRun(step, parent!.env)) {
        throw new FastPathRefused(`the image's history does not show ${isCopyStep(step) ? "a COPY" : `RUN ${step.command.slice(0, 60)}`} as kiln reads it`);
      }
    });
    const from = staged ? { plan: staged.stage, parent: await stageParent(staged, config, input, images), stage: staged.stageIndex } : undefined;
    const read = async (at: number) => {
      const layer = manifest.layers[at]!;
      if (layer.size > MAX_LAYER_BYTES) throw new FastPathRefused("a COPY's layer is over 64 MiB");
      return readLayer(await registry.getBlob(layer.digest));
    };
    const workdir = config.config?.WorkingDir;
    const target = await copyTarget(input.contextDir, plan, workdir, await read(copyIndex), from !== undefined);
    const copies: CopyTarget[] = [];
    for (const [k, step] of plan.after.entries()) {
      if (isCopyStep(step)) copies.push(await copyTarget(input.contextDir, { ...step.copy, chown: step.copy.chown !== undefined }, workdir, await read(copyIndex + 1 + k), false));
    }
    return { plan, ...target, copies, ...(parent ? { parent } : {}), ...(from ? { from } : {}) };
  }

  /** Where a COPY wrote, from the last full build's layer of it: its destination, the directories above it, a file source's place, the --chown owner. */
  async function copyTarget(contextDir: string, plan: Pick<CopyPlan, "sources" | "dest" | "chown">, workdir: string | undefined, entries: TarEntry[], fromStage: boolean): Promise<CopyTarget> {
    const dest = resolveDest(workdir, plan.dest);
    const destPath = dest.replace(/^\/+|\/+$/g, "");
    // The copied files must be where the COPY says (not behind a symlinked directory in the image).
    if (!entries.some((e) => e.type !== "directory" && (destPath === "" || e.path === destPath || e.path.startsWith(`${destPath}/`)))) {
      throw new FastPathRefused("the last full build's COPY layer has no file at the COPY's destination");
    }
    const ancestors = entries.filter((e) => e.type === "directory" && (destPath === e.path || destPath.startsWith(`${e.path}/`) || e.path === ""));
    // A COPY --from's source is in the stage, not the context: a file written as the destination is all kiln takes.
    const fileDest = fromStage ? (entries.some((e) => e.type !== "directory" && e.path === destPath) ? ("file" as const) : undefined) : await fileDestOf(contextDir, plan, destPath, entries);
    let owner = { uid: 0, gid: 0 };
    if (plan.chown) {
      const copied = entries.find((e) => e.type === "file" && (destPath === "" || e.path.startsWith(`${destPath}/`)));
      if (!copied) throw new FastPathRefused("--chown: no copied file in the last full build's layer shows the owner");
      owner = { uid: copied.uid, gid: copied.gid };
    }
    return { dest, ancestors, ...(fileDest ? { fileDest } : {}), owner };
  }

  /**
   * The image below stage S's final COPY. Its stage's last image (kiln's stage tag holds it) must
   * be it plus S's COPY and RUN layers, with S's RUN commands in its history: buildah's output
   * read wrong would fail this, not build on a wrong image.
   */
  async function stageParent(staged: StagePlan, config: ImageConfig, input: FastPathInput, images: StepImages): Promise<ParentImage> {
    const s = staged.stage;
    if (s.chown) throw new FastPathRefused("the stage's final COPY has --chown");
    const stage = staged.stageIndex + 1;
    // The stage's steps from its final COPY on: steps.total - steps.reused (FROM is step 1).
    const lastStep = s.copyStep + s.steps.total - s.steps.reused - 1;
    const last = images.stageStep(stage, lastStep);
    const lastImage = last ? await o.podman.inspectImage(last) : undefined;
    if (!lastImage) throw new FastPathRefused("the rebuilt stage's last image is not in storage");
    const parent = await parentImage(s, config, input, images.stageStep(stage, s.copyStep - 1), (image) => {
      const n = image.layers.length;
      return lastImage.layers.length === n + 1 + s.after.length && JSON.stringify(lastImage.layers.slice(0, n)) === JSON.stringify(image.layers);
    });
    // S's final COPY is its last from the context: every step after it is a RUN.
    const runsInHistory = lastImage.history.filter((h) => !h.empty_layer).slice(-s.after.length).map((h) => h.created_by);
    if (JSON.stringify(runsInHistory) !== JSON.stringify(s.after.map((r) => (isCopyStep(r) ? "COPY" : shownRun(r, parent.env))))) throw new FastPathRefused("the rebuilt stage's history does not show its RUN steps as kiln reads them");
    return parent;
  }

  /** The image the final COPY was made on, as the full build left it in storage, checked against the pushed image's layers. */
  async function parentImage(plan: CopyPlan, config: ImageConfig, input: FastPathInput, shown: string | undefined, fits: (image: LocalImage) => boolean): Promise<ParentImage> {
    if (o.buildNetwork !== "host") throw new FastPathRefused(`kiln runs RUN steps itself only with --build-network host (this kilnd: ${o.buildNetwork})`);
    // buildah runs shell-form RUN steps with the image's SHELL in Docker-format builds only.
    const docker = input.engine.endsWith(":docker");
    if (config.config?.Shell && !docker) throw new FastPathRefused("the image sets a SHELL (an OCI-format build)");
    // buildah hands the proxy build args to every RUN step without an ARG.
    const proxy = Object.keys(input.buildArgs).find((k) => /^(https?|ftp|no|all)_proxy$/i.test(k));
    if (proxy) throw new FastPathRefused(`the build arg ${proxy} reaches RUN steps without an ARG`);
    if (plan.copyStep <= 2) throw new FastPathRefused("the COPY comes right after FROM");
    if (!shown) throw new FastPathRefused("buildah's output did not show the image below the COPY");
    const image = await o.podman.inspectImage(shown);
    if (!image) throw new FastPathRefused(`the image below the COPY (${shown.slice(0, 12)}) is not in storage`);
    if (!fits(image)) throw new FastPathRefused("the image below the COPY in storage does not have the layers the build made on it");
    // podman's inspect leaves the SHELL out: buildah's shows the image's Docker-format config.
    const shell = docker ? await o.podman.dockerShell(image.id) : undefined;
    return { id: image.id, env: image.config.Env ?? [], user: image.config.User ?? "", workdir: image.config.WorkingDir ?? "", ...(shell ? { shell } : {}) };
  }

  /**
   * Builds and pushes the image without podman, or throws FastPathRefused saying why not.
   * onMade: the layer is made and the push begins; onCommit: the manifest is being tagged (from
   * then on the build cannot be taken back: a cancel waits for it).
   */
  async function build(input: FastPathInput, onMade?: (ms: number) => void, onCommit?: () => void): Promise<FastPathResult> {
    const t0 = Date.now();
    const base = await o.bases.load(input.project);
    if (!base) {
      const why = await o.bases.refusal(input.project);
      throw new FastPathRefused(why ? `the last full build cannot be a base: ${why}` : "no full build of this project to start from");
    }
    if (base.key !== baseKey(input)) throw new FastPathRefused("the image, Containerfile, context, target, build args or secrets differ from the last full build's");
    if (sha256(await readFile(input.containerfilePath, "utf8")) !== base.containerfileDigest) throw new FastPathRefused("the Containerfile changed");
    if (!input.baseImages) throw new FastPathRefused("a FROM image could not be looked up at its registry");
    for (const now of input.baseImages) {
      const then = base.baseImages.find((b) => b.reference === now.reference);
      if (then?.digest !== now.digest) throw new FastPathRefused(`the base image ${now.reference} moved (${then?.digest.slice(0, 19) ?? "none"} → ${now.digest.slice(0, 19)})`);
    }
    const ignoreText = await readIgnore(input.contextDir);
    if (sha256(ignoreText) !== base.ignoreDigest) throw new FastPathRefused("the ignore file changed");
    const ignored = ignoreMatcher(ignoreText);
    const { changedPaths, changeLine, checkChanges, firstRead } = await import("./changes.js");
    const listed = await changedPaths(input, base.commit);
    input.say(changeLine(base.commit, listed));
    const changed = listed.paths;
    const registry = clientFor(input);
    const push = async (config: ImageConfig, layers: OciManifest["layers"], newBlobs: [string, Buffer][], started: Promise<unknown>[] = [], next: Partial<FastPathBase> = {}) => {
      const configBytes = Buffer.from(JSON.stringify(config));
      const configDigest = sha256(configBytes);
      // The media types are the last full build's (OCI, or Docker's with --image-format docker).
      const manifest: OciManifest = { ...base.manifest, config: { mediaType: base.manifest.config.mediaType || OCI_CONFIG, digest: configDigest, size: configBytes.length }, layers };
      await Promise.all([...started, ...[...newBlobs, [configDigest, configBytes] as [string, Buffer]].map(([d, b]) => registry.putBlob(d, b))]);
      // The tag is the one step that cannot be taken back: never after a cancel.
      input.signal.throwIfAborted();
      onCommit?.();
      const digest = await registry.putManifest(input.commit, Buffer.from(JSON.stringify(manifest)), base.manifest.mediaType ?? OCI_MANIFEST);
      // This image is what the full build would have made (the differential tests hold it to
      // that), so the next build starts from it: its changes are the ones since this commit.
      // Everything else a base holds was checked equal above; the layers below the final COPY,
      // and the image in storage below it, are the same.
      await o.bases.save(input.project, { ...base, ...next, commit: input.commit, manifest, config }).catch(() => {});
      return { digest, imageId: configDigest };
    };

    const read = (await firstRead(input, changed, base.reads.reads, ignored, "a COPY")) ?? (await firstRead(input, changed, base.reads.mounts, () => false, "a RUN's bind mount"));
    if (!read) {
      onMade?.(Date.now() - t0);
      // The commit the last build was (the request is too, baseKey): buildah would take every
      // step from its cache, kiln's label step included, and give that build's image. It is
      // still the tag's: nothing to push.
      const same = base.commit === input.commit && Object.entries(input.labels).every(([k, v]) => base.config.config?.Labels?.[k] === v);
      const tagged = same ? await registry.getManifest(input.commit).catch(() => undefined) : undefined;
      if (tagged && tagged.manifest.config.digest === base.manifest.config.digest) {
        input.signal.throwIfAborted();
        onCommit?.();
        const steps = { total: base.reads.steps, reused: base.reads.steps };
        return { digest: tagged.digest, imageId: base.manifest.config.digest, files: 0, bytes: 0, steps, reused: true, same: true, ran: 0, made: 0 };
      }
      // No step reads a changed file: buildah would take every step from its cache but kiln's
      // label step (a new commit's labels), so the image is the last full build's with the new labels.
      const pushed = await push(nextConfig(base, [], input.labels), base.manifest.layers, []);
      return { ...pushed, files: 0, bytes: 0, steps: { total: base.reads.steps, reused: base.reads.steps }, reused: true, ran: 0, made: 0 };
    }
    const starts = base.starts ?? [];
    if ("refused" in base.copy && starts.length === 0) throw new FastPathRefused(`${read.path} changed, and a step reads it; kiln cannot make this Containerfile's last layer itself (${base.copy.refused})`);
    const { makeLayer } = await import("./layer.js");
    // What every run of steps by kiln shares: storage, the build's directory, runc and log, limits.
    const stepsContext = { podman: o.podman, cacheDir: o.cacheDir, dir: join(input.tmpDir, "fastpath"), runc: input.runc, secretFile: input.secretFile, say: input.say, buildId: input.buildId, maxBytes: MAX_RUN_LAYER_BYTES, signal: input.signal };
    if (!("refused" in base.copy) && base.copy.from) {
      // The final COPY --from copies out of an earlier stage S, whose final COPY reads the change:
      // S's COPY and RUN steps run again on the image below its COPY, and the COPY --from's layer is made from S's new filesystem.
      const copy = base.copy;
      const from = base.copy.from;
      await checkChanges(input, changed, copy.plan.earlier, from.plan.sources, ignored);
      const stageDest = resolveDest(from.parent.workdir, from.plan.dest);
      const stageCopy = await makeLayer({ contextDir: input.contextDir, sources: from.plan.sources, dest: stageDest, owner: { uid: 0, gid: 0 }, ancestors: [], ignored, maxBytes: MAX_LAYER_BYTES });
      let layer: Layer | undefined;
      const { runSteps } = await import("./run-steps.js");
      await runSteps({
        parent: from.parent,
        copy: stageCopy.entries,
        copyDir: stageDest,
        steps: from.plan.after.filter((step): step is RunStep => !isCopyStep(step)),
        layers: false,
        afterwards: async (root) => {
          layer = await makeLayer({ contextDir: root, sources: copy.plan.sources, dest: copy.dest, owner: "preserve", ancestors: copy.ancestors, ...(copy.fileDest ? { fileDest: copy.fileDest } : {}), ignored: () => false, maxBytes: MAX_LAYER_BYTES });
        },
        ...stepsContext,
      });
      if (!layer) throw new Error("the stage's filesystem was not read");
      onMade?.(Date.now() - t0);
      const layers = [...base.manifest.layers.slice(0, -1), { mediaType: base.manifest.layers.at(-1)?.mediaType || OCI_LAYER_GZIP, digest: layer.digest, size: layer.gz.length }];
      const pushed = await push(nextConfig(base, [{ diffId: layer.diffId, copyDest: copy.plan.dest }], input.labels), layers, [[layer.digest, layer.gz]]);
      return { ...pushed, files: layer.files, bytes: layer.bytes, steps: copy.plan.steps, reused: false, ran: from.plan.after.length, made: 1, stage: from.stage + 1 };
    }
    // The COPY to start from: the latest whose earlier steps read no changed file.
    const candidates = [...("refused" in base.copy ? [] : [base.copy]), ...starts];
    let copy: CopyBase | undefined;
    let refusal: unknown;
    for (const c of candidates) {
      const sources = [...c.plan.sources, ...c.plan.after.flatMap((step) => (isCopyStep(step) ? step.copy.sources : []))];
      try {
        await checkChanges(input, changed, c.plan.earlier, sources, ignored);
        copy = c;
        break;
      } catch (e) {
        if (!(e instanceof FastPathRefused)) throw e;
        refusal ??= e;
      }
    }
    if (!copy) throw refusal;
    const started = copy === base.copy ? undefined : copy.plan.copyStep;
    const made = (target: CopyTarget, sources: string[]) =>
      makeLayer({ contextDir: input.contextDir, sources, dest: target.dest, owner: target.owner, ancestors: target.ancestors, ...(target.fileDest ? { fileDest: target.fileDest } : {}), ignored, maxBytes: MAX_LAYER_BYTES });
    const layer = await made(copy, copy.plan.sources);
    let k = 0;
    const after: StepToRun[] = [];
    for (const step of copy.plan.after) {
      if (!isCopyStep(step)) after.push(step);
      else after.push({ layer: await made(copy.copies[k++]!, step.copy.sources), ...(step.copy.chown !== undefined && !NUMERIC_OWNER.test(step.copy.chown) ? { chownByName: step.copy.chown } : {}) });
    }
    const runs = after.filter((step) => !("layer" in step)).length;
    let ran: Layer[] = [];
    let uppers: string[] = [];
    const uploads: Promise<unknown>[] = [];
    if (runs > 0) {
      if (!copy.parent) throw new FastPathRefused("the last full build left no image below the COPY");
      // The COPY's layer goes up while the steps run.
      uploads.push(registry.putBlob(layer.digest, layer.gz));
      uploads.at(-1)!.catch(() => {});
      const { runSteps } = await import("./run-steps.js");
      ({ layers: ran, uppers } = await runSteps({ parent: copy.parent, copy: layer.entries, steps: after, ...stepsContext }));
    } else {
      ran = after.map((step) => (step as { layer: Layer }).layer);
    }
    onMade?.(Date.now() - t0);
    const all = [layer, ...ran];
    const below = base.manifest.layers.length - all.length;
    const layers = [...base.manifest.layers.slice(0, below), ...all.map((l, n) => ({ mediaType: base.manifest.layers[below + n]?.mediaType || OCI_LAYER_GZIP, digest: l.digest, size: l.gz.length }))];
    const newBlobs: [string, Buffer][] = all.slice(uploads.length).map((l) => [l.digest, l.gz]);
    const kinds = [copy.plan.dest, ...copy.plan.after.map((step) => (isCopyStep(step) ? step.copy.dest : undefined))];
    const config = nextConfig(base, all.map((l, n) => ({ diffId: l.diffId, ...(kinds[n] !== undefined ? { copyDest: kinds[n] } : {}) })), input.labels);
    const next = copy === base.copy ? {} : await carryLaterStarts(input, base, copy, uppers);
    const pushed = await push(config, layers, newBlobs, uploads, next);
    return {
      ...pushed,
      files: all.reduce((n, l) => n + l.files, 0),
      bytes: all.reduce((n, l) => n + l.bytes, 0),
      steps: copy.plan.steps,
      reused: false,
      ran: runs,
      made: all.length,
      ...(started ? { startedAt: started } : {}),
    };
  }

  /** After a start from an earlier COPY: the base's later starts carried onto this build's steps (later-starts.ts). */
  async function carryLaterStarts(input: FastPathInput, base: FastPathBase, copy: CopyBase, uppers: readonly string[]): Promise<Partial<FastPathBase>> {
    const plan = laterStarts({ copy: base.copy, starts: base.starts ?? [] }, copy);
    let kept: string[] = [];
    try {
      if (plan.needed > 0) kept = await o.bases.keepSnapshots(input.project, input.buildId, uppers.slice(0, plan.needed));
    } catch (e) {
      // Not kept (the build's directory on another filesystem, say): the later starts go, as they did before snapshots.
      input.say(`fast path: the steps' directories could not be kept as snapshots (${(e as Error).message}); the next source change starts from this COPY again`);
    }
    return plan.carry(kept);
  }

  /**
   * kiln's first build on a FROM image new to storage (first-build.ts), or throws
   * FastPathRefused saying why not; its afterward records the base for the next build.
   */
  async function first(input: FirstBuildInput, onMade?: (ms: number) => void, onCommit?: () => void): Promise<FirstBuild> {
    const { firstBuild } = await import("./first-build.js");
    const { removeImages } = await import("../storage/prune.js");
    return firstBuild(
      {
        bases: o.bases,
        podman: o.podman,
        buildNetwork: o.buildNetwork,
        cacheDir: o.cacheDir,
        blobPath: (digest) => o.podman.baseLayers.blobPath(digest),
        fromBlob: (input, reference, digest) => {
          const name = parseImageName(reference);
          if (!name) throw new FastPathRefused(`${reference} is not in a registry`);
          const from = new RegistryClient(name.registry, name.repository, o.insecureRegistries.has(name.registry), { credential: () => input.credentials.lookup(name.registry, name.repository), signal: input.signal });
          return from.getBlob(digest);
        },
        client: clientFor,
        removeImages: (ids) => removeImages(o.podman.env(), ids),
      },
      input,
      onMade,
      onCommit,
    );
  }

  /** Loads the parser and the tar writer (kilnd calls it once it answers, off the wake path). */
  async function preload(): Promise<void> {
    await Promise.all([import("./plan.js"), import("./layer.js"), import("../image/tar-entries.js")]);
  }

  return { record, build, first, preload };
}

export type FastPath = ReturnType<typeof createFastPath>;

/** The images buildah's output showed for each step of a full build (podman/stage-images.ts). */
export interface StepImages {
  finalStageStep(step: number): string | undefined;
  stageStep(stage: number, step: number): string | undefined;
}

const NO_STEP_IMAGES: StepImages = { finalStageStep: () => undefined, stageStep: () => undefined };

/** A RUN's line in buildah's history: its ARG values (an ENV's where the image at that step sets the name) before the step. */
export const shownRun = (step: RunStep, parentEnv: readonly string[]) => runHistory(step.history, step.args, [...parentEnv, ...step.env.map(([k, v]) => `${k}=${v}`)]);

/** The image's history must line up with its layers, and have kiln's label step (rewritten per build) after the last. */
function checkLayers(manifest: OciManifest, config: ImageConfig): void {
  const history = config.history ?? [];
  const withLayers = history.filter((h) => !h.empty_layer);
  if (manifest.layers.length === 0 || withLayers.length !== manifest.layers.length || config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new FastPathRefused("the image's history does not line up with its layers");
  }
  labelStep(history);
}

/**
 * Where kiln's label step is in the image's history (podman/labels.ts puts it before the final
 * stage's trailing metadata steps): the last LABEL of kiln's, with only steps without layers after it.
 */
function labelStep(history: NonNullable<ImageConfig["history"]>): number {
  const at = history.findLastIndex((h) => KILN_LABEL_STEP.test(h.created_by ?? ""));
  if (at < 0 || !history[at]!.empty_layer || history.slice(at + 1).some((h) => !h.empty_layer)) {
    throw new FastPathRefused("the image's history has no label step of kiln's after its last layer");
  }
  return at;
}

/**
 * One file copied to a destination without "/": written as the destination itself, or into it
 * when the image below has a directory there. The last full build's layer says which; undefined
 * when the source is a directory (or there are several, or the destination ends with "/").
 */
async function fileDestOf(contextDir: string, plan: Pick<CopyPlan, "sources" | "dest">, destPath: string, entries: TarEntry[]): Promise<"file" | "into-dir" | undefined> {
  if (plan.sources.length !== 1 || plan.dest.endsWith("/")) return undefined;
  const source = plan.sources[0]!;
  const st = await lstat(join(contextDir, source));
  if (!st.isFile()) return undefined;
  if (entries.some((e) => e.type !== "directory" && e.path === destPath)) return "file";
  if (entries.some((e) => e.path === `${destPath}/${posix.basename(source)}`)) return "into-dir";
  throw new FastPathRefused("the last full build's COPY layer does not show where the file went");
}

export function resolveDest(workdir: string | undefined, dest: string): string {
  const abs = posix.resolve(workdir || "/", dest);
  return dest.endsWith("/") && abs !== "/" ? `${abs}/` : abs;
}

/**
 * The full build's config with kiln's new labels and fresh times, and the new layers kiln made
 * when there are some (the COPY it started from, then the RUN steps and COPYs after it: each COPY
 * with its destination as written); otherwise every layer stays, as buildah's cache would keep them.
 */
function nextConfig(base: FastPathBase, made: { diffId: string; copyDest?: string }[], labels: Record<string, string>): ImageConfig {
  const now = new Date().toISOString();
  const config = structuredClone(base.config);
  config.created = now;
  config.config = { ...config.config, Labels: { ...config.config?.Labels, ...labels } };
  const history = config.history ?? [];
  if (made.length > 0) {
    const ids = config.rootfs.diff_ids;
    ids.splice(ids.length - made.length, made.length, ...made.map((m) => m.diffId));
    // The steps with layers, newest last.
    const withLayers = history.flatMap((h, i) => (h.empty_layer ? [] : [i])).slice(-made.length);
    withLayers.forEach((at, k) => {
      const m = made[k]!;
      history[at] =
        m.copyDest !== undefined
          ? { ...history[at], created: now, created_by: `/bin/sh -c #(nop) COPY ${m.diffId.replace("sha256:", "layer:")} in ${m.copyDest} `, comment: `kiln fast path from ${base.commit.slice(0, 12)}` }
          : { ...history[at], created: now, comment: "kiln fast path: run by kiln on the layers below" };
    });
  }
  // kiln's label step (checkLayers), and the metadata steps after it: a full build commits them anew.
  const at = labelStep(history);
  history[at] = { ...history[at], created: now, created_by: `/bin/sh -c #(nop) ${labelLine(labels)}` };
  for (let i = at + 1; i < history.length; i++) history[i] = { ...history[i], created: now };
  return config;
}

export async function readIgnore(contextDir: string): Promise<string> {
  for (const name of IGNORE_FILES) {
    try {
      return await readFile(join(contextDir, name), "utf8");
    } catch {
      // next
    }
  }
  return "";
}

/** Whether the ignore file leaves a context path out; one with exceptions (!) kiln does not follow is a refusal. */
export function ignoreMatcher(ignoreText: string): (path: string) => boolean {
  if (/^\s*!/m.test(ignoreText)) throw new FastPathRefused("the ignore file has exceptions (!)");
  const ig = ignore().add(ignoreText.split(/\r?\n/));
  return (p) => ig.ignores(p);
}

export const ignoreDigest = async (contextDir: string) => sha256(await readIgnore(contextDir));
