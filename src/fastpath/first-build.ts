// kiln's first build of a project on a FROM image storage did not have (the cold plan, README,
// Performance): buildah's layer cache cannot hold a step on an image storage never had, so
// nothing is lost by not asking buildah for the steps kiln can run itself.
//
// - buildah builds the steps before the final stage's first COPY from the context (the prefix:
//   FROM, WORKDIR, ENV...), with the full build's flags, so its cache serves later full builds;
// - kiln makes each COPY's layer from the checkout, the directories on the way to its
//   destination read from the prefix image and the layers kiln made before it, and runs the RUN
//   steps on them (run-steps.ts: runc on overlays), while buildah builds the skeleton beside them:
//   the Containerfile with those COPY and RUN steps as LABEL steps of their own, so that the
//   config (the metadata steps, kiln's label step, the history) is buildah's own work;
// - kiln pushes the image: the FROM layers (mounted from their repository on the same registry,
//   else uploaded from kiln's layer store), its own layers, the config and the manifest;
// - after the result, the base the next build starts from is recorded from what kiln ran
//   (base.ts: its starts stand on the prefix image and on snapshots of kiln's steps).
//
// What kiln cannot be sure of is a refusal before the tag is written, and the full build runs:
// more than one stage, --chown, a step before the first COPY that makes a layer, a working
// directory the image lacks that no COPY makes, a RUN that changed a directory a later COPY
// writes under. test/integration/first-build.test.ts holds the image to the full build's.
import { lstat, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import type { TarEntry } from "../image/tar-entries.js";
import { normalizeTarPath } from "../image/tar-entries.js";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "../image/whiteouts.js";
import { parseImageName } from "../images/base-images.js";
import type { FreshImage } from "../images/layer-store.js";
import type { OciManifest, RegistryClient } from "../registry/client.js";
import { DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256 } from "../registry/client.js";
import { createStageTracker, SKELETON_REPO, stageTag } from "../podman/stage-images.js";
import type { Podman } from "../podman/podman.js";
import { baseKey, type BaseStore, type CopyBase, type CopyTarget, type ImageConfig } from "./base.js";
import type { FastPathInput, FastPathResult } from "./fast-path.js";
import { ignoreDigest, ignoreMatcher, MAX_LAYER_BYTES, MAX_RUN_LAYER_BYTES, readIgnore, resolveDest, shownRun } from "./fast-path.js";
import { makeLayer, type Layer, type LayerEntry } from "./layer.js";
import { contextCopies, isCopyStep, planFastPath, planReads, type CopyPlan, type RunStep } from "./plan.js";
import { FastPathRefused } from "./refused.js";
import { runSteps, type ParentImage, type StepToRun } from "./run-steps.js";
import { resolveUser } from "./run-spec.js";

/** The skeleton's stand-in for the n-th step kiln runs: a label no Containerfile sets. */
export const PLACEHOLDER = "kiln.first-build.step";

export interface FirstBuildInput {
  fast: FastPathInput;
  /** The Containerfile the full build gives buildah: kiln's label step placed, FROM pinned, secret mounts keyed. */
  labelled: string;
  from: FreshImage;
  /** Docker's image format (kilnd's --image-format), else OCI's. */
  docker: boolean;
  /** Builds a Containerfile of this build's with buildah, as the full build would (its flags, no labels, no secrets); each output line to onLine; resolves with the image's ID. */
  bud(containerfile: string, tag: string, onLine: (line: string) => void, quiet: boolean): Promise<string>;
}

export interface FirstBuildDeps {
  bases: BaseStore;
  podman: Pick<Podman, "inspectImage" | "mountImage" | "unmountImage" | "env" | "storedConfig">;
  buildNetwork: string;
  cacheDir: string;
  /** Where kiln's layer store keeps a FROM layer's blob (a layer storage pulled itself has none). */
  blobPath(digest: string): string;
  /** A FROM layer's blob from the FROM image's own repository. */
  fromBlob(input: FastPathInput, reference: string, digest: string): Promise<Buffer>;
  /** The registry client for the build's repository, whose tokens may also read these repositories. */
  client(input: FastPathInput, mountFrom: string[]): RegistryClient;
  /** Removes images from storage (the skeleton, once its config is read). */
  removeImages(ids: string[]): Promise<unknown>;
}

export interface FirstBuild {
  result: FastPathResult & { prefixSteps: number };
  /** Records the base for the next build (after the result, before the build's directory goes): what it says. */
  afterward(): Promise<string>;
}

/** A COPY kiln makes, in order: its plan's words, where it writes, its layer. */
interface MadeCopy {
  copy: { sources: string[]; dest: string };
  target: CopyTarget;
  layer: Layer;
}

export async function firstBuild(d: FirstBuildDeps, i: FirstBuildInput, onMade?: (ms: number) => void, onCommit?: () => void): Promise<FirstBuild> {
  const t0 = Date.now();
  const f = i.fast;
  if (d.buildNetwork !== "host") throw new FastPathRefused(`kiln runs RUN steps itself only with --build-network host (this kilnd: ${d.buildNetwork})`);
  const proxy = Object.keys(f.buildArgs).find((k) => /^(https?|ftp|no|all)_proxy$/i.test(k));
  if (proxy) throw new FastPathRefused(`the build arg ${proxy} reaches RUN steps without an ARG`);
  const text = await readFile(f.containerfilePath, "utf8");
  const { planSecretMounts } = await import("../secrets/secret-mounts.js");
  const keyed = planSecretMounts(text, new Map(f.secrets)).text;
  const target = f.target || undefined;
  if (DockerfileParser.parse(keyed).getFROMs().length !== 1) throw new FastPathRefused("the Containerfile has more than one stage");
  // One plan per context COPY, the first to the last: the first is what kiln runs, the rest are the next builds' starts.
  const count = contextCopies(keyed);
  const plans: CopyPlan[] = [];
  for (let k = 0; k < count; k++) {
    const planned = planFastPath(keyed, target, k === count - 1 ? undefined : k, { buildArgs: f.buildArgs, docker: i.docker });
    if (!planned.ok) throw new FastPathRefused(planned.reason);
    plans.push(planned.plan);
  }
  const first = plans[0];
  if (!first) throw new FastPathRefused("the final stage has no COPY from the context");
  const copyWords = [{ sources: first.sources, dest: first.dest, chown: first.chown }, ...first.after.filter(isCopyStep).map((s) => ({ ...s.copy, chown: s.copy.chown !== undefined }))];
  if (copyWords.some((c) => c.chown)) throw new FastPathRefused("a COPY has --chown (kiln's first build does not resolve owners)");
  const ignored = ignoreMatcher(await readIgnore(f.contextDir));

  // The prefix and the skeleton, from the Containerfile buildah would have built.
  const { prefix: prefixText, skeleton: skeletonText, prefixSteps } = splitContainerfile(i.labelled, first.after.length + 1);
  const dir = join(f.tmpDir, "first-build");
  await mkdir(dir, { recursive: true });
  await Promise.all([writeFile(join(dir, "Prefix"), prefixText), writeFile(join(dir, "Skeleton"), skeletonText)]);
  f.say(`first build: ${i.from.reference} is new to storage, so no step can come from the cache: buildah builds the ${prefixSteps} step${prefixSteps === 1 ? "" : "s"} before the first COPY, kiln makes the COPY layers and runs the RUN steps, buildah writes the config beside them`);
  // Tagged as the commit's stage 0: the prune keeps the tag while a base stands on the image (storage/volume-keeper.ts).
  const prefixId = await i.bud(join(dir, "Prefix"), stageTag(f.project, f.commit, 0), () => {}, false);
  // Its config as storage keeps it (a file: no podman process on the critical path).
  const { parent, diffIds } = await parentOf(d, prefixId, i.docker);
  if (JSON.stringify(diffIds) !== JSON.stringify(i.from.diffIds)) throw new FastPathRefused("a step before the first COPY makes a layer");

  // The skeleton beside kiln's steps; its step images give the config at each COPY (the next builds' starts).
  const tracker = createStageTracker();
  const skeletonBuilt = i.bud(join(dir, "Skeleton"), `${SKELETON_REPO}/${f.project}:${f.buildId}`, (line) => tracker.line(line), true);
  skeletonBuilt.catch(() => {});

  try {
    return await kilnSteps(d, i, { t0, first, copyWords, ignored, prefix: parent, prefixSteps, dir, keyed, text, plans, tracker, skeletonBuilt }, onMade, onCommit);
  } catch (e) {
    await skeletonBuilt.then((id) => d.removeImages([id]), () => {});
    throw e;
  }
}

interface Prepared {
  t0: number;
  first: CopyPlan;
  copyWords: { sources: string[]; dest: string }[];
  ignored(path: string): boolean;
  prefix: ParentImage;
  prefixSteps: number;
  dir: string;
  keyed: string;
  text: string;
  plans: CopyPlan[];
  tracker: ReturnType<typeof createStageTracker>;
  skeletonBuilt: Promise<string>;
}

/** kiln's steps on the prefix, beside the skeleton; the config; the push. */
async function kilnSteps(d: FirstBuildDeps, i: FirstBuildInput, p: Prepared, onMade?: (ms: number) => void, onCommit?: () => void): Promise<FirstBuild> {
  const f = i.fast;
  const { first, prefix: parent } = p;
  const registry = d.client(f, sameRegistry(f, i.from) ? [parseImageName(i.from.reference)!.repository] : []);
  const uploads: Promise<unknown>[] = [];
  const upload = (x: Promise<unknown>) => {
    x.catch(() => {});
    uploads.push(x);
  };
  const made = await makeCopies(d, parent, p.copyWords, f.contextDir, p.ignored);
  upload(pushFromLayers(d, registry, f, i.from));
  for (const m of made) upload(registry.putBlob(m.layer.digest, m.layer.gz));
  // Each step after the first COPY: a RUN kiln runs, or a later COPY's layer, made already.
  let k = 1;
  const steps: StepToRun[] = first.after.map((s) => (isCopyStep(s) ? { layer: made[k++]!.layer } : s));
  const runs = first.after.filter((s) => !isCopyStep(s)).length;
  // Without RUN steps every layer is made already: nothing to mount or run.
  const ran =
    runs === 0
      ? { layers: made.slice(1).map((m) => m.layer), uppers: [] }
      : await runSteps({ parent, copy: made[0]!.layer.entries, steps, podman: d.podman, cacheDir: d.cacheDir, dir: join(p.dir, "steps"), runc: f.runc, secretFile: f.secretFile, say: (line) => f.say(line.replace(/^fast path: /, "first build: ")), buildId: f.buildId, maxBytes: MAX_RUN_LAYER_BYTES, signal: f.signal });
  checkLaterCopies(first.after, ran.layers);
  const layers = [made[0]!.layer, ...ran.layers];
  onMade?.(Date.now() - p.t0);
  for (const [n, l] of ran.layers.entries()) if (!isCopyStep(first.after[n]!)) upload(registry.putBlob(l.digest, l.gz));

  // The config: the skeleton's, its stand-ins made the real steps.
  const skeletonId = await p.skeletonBuilt;
  const config = realConfig(JSON.parse((await d.podman.storedConfig(skeletonId)).toString("utf8")) as ImageConfig, i.from.diffIds, first, made, layers, parent.env, f.commit);
  const configBytes = Buffer.from(JSON.stringify(config));
  const types = i.docker ? { manifest: DOCKER_MANIFEST, config: DOCKER_CONFIG, layer: DOCKER_LAYER_GZIP } : { manifest: OCI_MANIFEST, config: OCI_CONFIG, layer: OCI_LAYER_GZIP };
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: { mediaType: types.config, digest: sha256(configBytes), size: configBytes.length },
    layers: [...i.from.layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.size })), ...layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.gz.length }))],
  };
  await Promise.all([...uploads, registry.putBlob(manifest.config.digest, configBytes)]);
  // The tag is the one step that cannot be taken back: never after a cancel.
  f.signal.throwIfAborted();
  onCommit?.();
  const digest = await registry.putManifest(f.commit, Buffer.from(JSON.stringify(manifest)), types.manifest);
  return {
    result: {
      digest,
      imageId: manifest.config.digest,
      reused: false,
      ran: runs,
      made: layers.length,
      steps: { total: first.steps.total, reused: 0 },
      files: layers.reduce((n, l) => n + l.files, 0),
      bytes: layers.reduce((n, l) => n + l.bytes, 0),
      prefixSteps: p.prefixSteps,
    },
    afterward: () => recordBase(d, { f, keyed: p.keyed, text: p.text, plans: p.plans, prefix: parent, made, uppers: ran.uppers, manifest, config, tracker: p.tracker, docker: i.docker }).finally(() => d.removeImages([skeletonId]).catch(() => {})),
  };
}

/**
 * The image (its full ID) as a RUN on it sees it, from its config as storage keeps it: the
 * environment, user, working directory and, in Docker-format builds (where buildah runs
 * shell-form RUN steps with it), the SHELL; and its layers' diff IDs.
 */
async function parentOf(d: Pick<FirstBuildDeps, "podman">, id: string, docker: boolean): Promise<{ parent: ParentImage; diffIds: string[] }> {
  const config = JSON.parse((await d.podman.storedConfig(id)).toString("utf8")) as ImageConfig & { config?: { Env?: string[]; User?: string; Shell?: string[] | null } };
  const c = config.config ?? {};
  const parent = { id, env: c.Env ?? [], user: c.User ?? "", workdir: c.WorkingDir ?? "", ...(docker && c.Shell?.length ? { shell: c.Shell } : {}) };
  return { parent, diffIds: config.rootfs.diff_ids };
}

const sameRegistry = (f: FastPathInput, from: FreshImage) => parseImageName(from.reference)?.registry === f.registry;

/**
 * The FROM layers into the build's repository: already there, mounted from the base's repository
 * on the same registry, else uploaded (from kiln's layer store, else from the base's repository).
 */
async function pushFromLayers(d: Pick<FirstBuildDeps, "blobPath" | "fromBlob">, registry: RegistryClient, f: FastPathInput, from: FreshImage): Promise<void> {
  const name = parseImageName(from.reference);
  await Promise.all(
    from.layers.map(async (l) => {
      if (await registry.hasBlob(l.digest)) return;
      if (name && sameRegistry(f, from) && (await registry.mountBlob(l.digest, name.repository))) return;
      const kept = await readFile(d.blobPath(l.digest)).catch(() => undefined);
      await registry.putBlob(l.digest, kept && sha256(kept) === l.digest ? kept : await d.fromBlob(f, from.reference, l.digest));
    }),
  );
}

/**
 * The Containerfile up to the final stage's first COPY from the context (buildah builds it), and
 * the whole of it with that COPY and every COPY, ADD and RUN after it a LABEL step of its own
 * (layerSteps of them: kiln's steps, which the plan counted).
 */
export function splitContainerfile(labelled: string, layerSteps: number): { prefix: string; skeleton: string; prefixSteps: number } {
  const file = DockerfileParser.parse(labelled);
  const froms = file.getFROMs();
  const all = file.getInstructions();
  const steps = all.slice(all.indexOf(froms.at(-1)!) + 1);
  const firstCopy = steps.findIndex((s) => s.getKeyword() === "COPY" && !/(^|\s)--from[=\s]/i.test(s.getArgumentsContent() ?? ""));
  if (firstCopy < 0) throw new FastPathRefused("the final stage has no COPY from the context");
  // Known before buildah runs: the prefix must be metadata only (its image's layers are the FROM image's).
  if (steps.slice(0, firstCopy).some((s) => ["RUN", "ADD", "COPY"].includes(s.getKeyword()))) throw new FastPathRefused("a step before the first COPY makes a layer");
  const lines = labelled.split("\n");
  const replaced = steps.slice(firstCopy).filter((s) => ["COPY", "ADD", "RUN"].includes(s.getKeyword()));
  if (replaced.length !== layerSteps) throw new FastPathRefused(`the Containerfile buildah builds has ${replaced.length} steps with layers after its first COPY, the plan ${layerSteps}`);
  const out = [...lines];
  // From the last to the first, so that earlier line numbers stay.
  replaced.reverse().forEach((s, n) => {
    const { start, end } = s.getRange();
    out.splice(start.line, end.line - start.line + 1, `LABEL "${PLACEHOLDER}.${replaced.length - 1 - n}"="x"`);
  });
  return { prefix: `${lines.slice(0, steps[firstCopy]!.getRange().start.line).join("\n")}\n`, skeleton: out.join("\n"), prefixSteps: firstCopy + 1 };
}

/** One path of the image below a step: what kiln's layers wrote, else the prefix image's (a symlink on the way is a refusal). */
type Node = { type: string; mode: number; uid: number; gid: number };

function createView(root: string) {
  const added = new Map<string, Node>();
  return {
    async get(path: string): Promise<Node | undefined> {
      const own = added.get(path);
      if (own) return own;
      const parts = path.split("/");
      for (let n = 1; n <= parts.length; n++) {
        const p = parts.slice(0, n).join("/");
        const mine = added.get(p);
        const st = mine ? undefined : await lstat(join(root, p)).catch(() => undefined);
        const node = mine ?? (st ? { type: st.isDirectory() ? "directory" : st.isSymbolicLink() ? "symlink" : st.isFile() ? "file" : "other", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid } : undefined);
        if (!node) return undefined;
        if (n === parts.length) return node;
        if (node.type === "symlink") throw new FastPathRefused(`/${p} is a symlink in the image, on the way to a COPY's destination`);
        if (node.type !== "directory") throw new FastPathRefused(`/${p} is not a directory in the image, on the way to a COPY's destination`);
      }
      return undefined;
    },
    add(entries: readonly LayerEntry[]): void {
      for (const { header: h } of entries) added.set(normalizeTarPath(h.name), { type: h.type ?? "file", mode: (h.mode ?? 0) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0 });
    },
  };
}

/**
 * Every COPY's layer, in order, each made on the image below it as far as kiln knows it before
 * the RUN steps run (the prefix image and the COPY layers before it; checkLaterCopies holds the
 * later ones to what the RUN steps wrote).
 */
async function makeCopies(d: Pick<FirstBuildDeps, "podman">, parent: ParentImage, copies: { sources: string[]; dest: string }[], contextDir: string, ignored: (p: string) => boolean): Promise<MadeCopy[]> {
  const root = await d.podman.mountImage(parent.id);
  try {
    const view = createView(root);
    const out: MadeCopy[] = [];
    for (const copy of copies) {
      const target = await copyTarget(view, contextDir, copy, resolveDest(parent.workdir, copy.dest));
      if (out.length === 0) {
        // buildah 1.28 makes the working directory after the step that follows WORKDIR (here the
        // first COPY: the prefix has no layer of its own) ran, in its layer: each directory still
        // missing on the way, 0755, the user's (those the COPY made are root's). first-build.test.ts
        // holds this to buildah.
        view.add(target.ancestors.map((a) => ({ header: { name: `${a.path}/`, type: "directory", mode: a.mode, uid: a.uid, gid: a.gid } })));
        const workdir = await workdirEntries(view, root, parent);
        target.ancestors = [...target.ancestors, ...workdir].sort((a, b) => a.path.split("/").length - b.path.split("/").length);
      }
      const layer = await makeLayer({ contextDir, sources: copy.sources, dest: target.dest, owner: target.owner, ancestors: target.ancestors, ...(target.fileDest ? { fileDest: target.fileDest } : {}), ignored, maxBytes: MAX_LAYER_BYTES });
      view.add(layer.entries);
      out.push({ copy, target, layer });
    }
    return out;
  } finally {
    await d.podman.unmountImage(parent.id);
  }
}

/** The directories of the working directory the image (as the view has it) lacks, as buildah makes them: 0755, the user's. */
async function workdirEntries(view: ReturnType<typeof createView>, root: string, parent: ParentImage): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  const parts = parent.workdir.replace(/^\/+|\/+$/g, "").split("/").filter(Boolean);
  let owner: { uid: number; gid: number } | undefined;
  for (let n = 1; n <= parts.length; n++) {
    const path = parts.slice(0, n).join("/");
    const node = await view.get(path);
    if (node && node.type !== "directory") throw new FastPathRefused(`the working directory's /${path} is a ${node.type} in the image`);
    if (node) continue;
    const { uid, gid } = (owner ??= resolveUser(root, parent.user));
    out.push({ path, type: "directory", mode: 0o755, uid, gid, size: 0, mtime: Date.now() });
  }
  return out;
}

/** Where a COPY writes, read from the image below it: the directories on the way (made 0755 and root's where missing, as buildah's copier makes them), a file source's place. */
async function copyTarget(view: ReturnType<typeof createView>, contextDir: string, copy: { sources: string[]; dest: string }, dest: string): Promise<CopyTarget> {
  const destPath = dest.replace(/^\/+|\/+$/g, "");
  let dirPath = destPath;
  let fileDest: CopyTarget["fileDest"];
  if (copy.sources.length === 1 && !copy.dest.endsWith("/")) {
    const st = await lstat(join(contextDir, copy.sources[0]!));
    if (st.isSymbolicLink()) throw new FastPathRefused("a COPY's one source is a symlink");
    if (st.isFile()) {
      const at = destPath ? await view.get(destPath) : undefined;
      if (at?.type === "directory") fileDest = "into-dir";
      else if (at && at.type !== "file") throw new FastPathRefused(`a COPY's destination /${destPath} is a ${at.type} in the image`);
      else {
        fileDest = "file";
        dirPath = posix.dirname(destPath) === "." ? "" : posix.dirname(destPath);
      }
    }
  }
  const now = Date.now();
  const ancestors: TarEntry[] = [];
  const parts = dirPath ? dirPath.split("/") : [];
  for (let n = 1; n <= parts.length; n++) {
    const path = parts.slice(0, n).join("/");
    const node = await view.get(path);
    if (node && node.type !== "directory") throw new FastPathRefused(`/${path} is a ${node.type} in the image, where a COPY writes a directory`);
    ancestors.push({ path, type: "directory", size: 0, mtime: now, ...(node ? { mode: node.mode, uid: node.uid, gid: node.gid } : { mode: 0o755, uid: 0, gid: 0 }) });
  }
  return { dest, ancestors, ...(fileDest ? { fileDest } : {}), owner: { uid: 0, gid: 0 } };
}

/**
 * A later COPY's layer was made before the RUN steps ran: what a RUN before it wrote on its way
 * (a directory of another mode or owner, a file where it writes a directory or the reverse, a
 * removal) would change what buildah writes, so it is a refusal.
 */
function checkLaterCopies(after: CopyPlan["after"], layers: readonly Layer[]): void {
  const runs: Map<string, Node>[] = [];
  const removed: string[][] = [];
  after.forEach((step, n) => {
    const layer = layers[n]!;
    if (!isCopyStep(step)) {
      const nodes = new Map<string, Node>();
      const gone: string[] = [];
      for (const { header: h } of layer.entries) {
        const path = normalizeTarPath(h.name);
        const base = posix.basename(path);
        const parentDir = posix.dirname(path) === "." ? "" : posix.dirname(path);
        const name = base.slice(WHITEOUT_PREFIX.length);
        if (base === OPAQUE_WHITEOUT) gone.push(parentDir);
        else if (base.startsWith(WHITEOUT_PREFIX)) gone.push(parentDir ? `${parentDir}/${name}` : name);
        else nodes.set(path, { type: h.type ?? "file", mode: (h.mode ?? 0) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0 });
      }
      runs.push(nodes);
      removed.push(gone);
      return;
    }
    for (const { header: h } of layer.entries) {
      const path = normalizeTarPath(h.name);
      for (const [r, nodes] of runs.entries()) {
        const theirs = nodes.get(path);
        const dir = h.type === "directory";
        if (theirs && (dir ? theirs.type !== "directory" || theirs.mode !== ((h.mode ?? 0) & 0o7777) || theirs.uid !== h.uid || theirs.gid !== h.gid : theirs.type === "directory")) {
          throw new FastPathRefused(`a RUN step wrote /${path}, where a later COPY writes ${dir ? "a directory" : "a file"}, otherwise than kiln read it`);
        }
        if (removed[r]!.some((g) => path === g || path.startsWith(`${g}/`))) throw new FastPathRefused(`a RUN step removed /${path} or a directory above it, where a later COPY writes`);
      }
    }
  });
}

/** The skeleton's config with its stand-ins made the steps kiln ran: their history lines and layers. */
function realConfig(skeleton: ImageConfig, fromDiffIds: string[], first: CopyPlan, made: MadeCopy[], layers: Layer[], parentEnv: string[], commit: string): ImageConfig {
  const config = structuredClone(skeleton);
  if (JSON.stringify(config.rootfs.diff_ids) !== JSON.stringify(fromDiffIds)) throw new FastPathRefused("the skeleton's layers are not the FROM image's");
  const strip = (c: { Labels?: Record<string, string> | null } | undefined) => {
    for (const k of Object.keys(c?.Labels ?? {})) if (k.startsWith(`${PLACEHOLDER}.`)) delete c!.Labels![k];
  };
  strip(config.config);
  strip(config.container_config as { Labels?: Record<string, string> } | undefined);
  const steps = [undefined, ...first.after];
  const history = config.history ?? [];
  let n = 0;
  let copies = 0;
  for (const [at, h] of history.entries()) {
    if (!h.created_by?.includes(`LABEL "${PLACEHOLDER}.`)) continue;
    const step = steps[n];
    const layer = layers[n++];
    if (!layer) throw new FastPathRefused("the skeleton has more stand-ins than kiln ran steps");
    const { empty_layer: _none, ...rest } = h;
    history[at] =
      step === undefined || isCopyStep(step)
        ? { ...rest, created_by: `/bin/sh -c #(nop) COPY ${layer.diffId.replace("sha256:", "layer:")} in ${made[copies++]!.copy.dest} `, comment: `kiln first build of ${commit.slice(0, 12)}` }
        : { ...rest, created_by: shownRun(step as RunStep, parentEnv), comment: "kiln first build: run by kiln on the layers below" };
  }
  if (n !== layers.length) throw new FastPathRefused(`the skeleton has ${n} stand-ins for kiln's ${layers.length} steps`);
  config.rootfs.diff_ids = [...fromDiffIds, ...layers.map((l) => l.diffId)];
  if (JSON.stringify(config).includes(PLACEHOLDER)) throw new FastPathRefused("the skeleton's stand-ins are still in its config");
  return config;
}

interface RecordInput {
  f: FastPathInput;
  keyed: string;
  text: string;
  plans: CopyPlan[];
  prefix: ParentImage;
  made: MadeCopy[];
  uppers: string[];
  manifest: OciManifest;
  config: ImageConfig;
  tracker: ReturnType<typeof createStageTracker>;
  docker: boolean;
}

/**
 * The base the next build starts from, made of what kiln ran: each context COPY a start, the
 * first standing on the prefix image, each later one on it and on the snapshots of kiln's steps
 * below that COPY, with the environment, user and working directory the skeleton's image at that
 * step has.
 */
async function recordBase(d: FirstBuildDeps, r: RecordInput): Promise<string> {
  const { f } = r;
  try {
    const reads = planReads(r.keyed, f.target || undefined);
    if (!reads.ok) throw new FastPathRefused(reads.reason);
    if (!f.baseImages) throw new FastPathRefused("a FROM image could not be looked up at its registry");
    const first = r.plans[0]!;
    // Where each COPY is among kiln's steps (0: the first COPY; n: first.after[n - 1]).
    const stepOf = [0, ...first.after.flatMap((s, n) => (isCopyStep(s) ? [n + 1] : []))];
    const needed = Math.max(0, ...r.plans.map((p, k) => (k > 0 && p.after.some((s) => !isCopyStep(s)) ? stepOf[k]! : 0)));
    const kept = needed > 0 ? await d.bases.keepSnapshots(f.project, f.buildId, r.uppers.slice(0, needed)) : [];
    const bases: CopyBase[] = [];
    for (const [k, plan] of r.plans.entries()) {
      const runs = plan.after.some((s) => !isCopyStep(s));
      let parent: ParentImage | undefined;
      if (runs && k === 0) parent = r.prefix;
      else if (runs) {
        const shown = r.tracker.finalStageStep(plan.copyStep - 1);
        const image = shown ? await d.podman.inspectImage(shown) : undefined;
        if (!image) throw new FastPathRefused(`the skeleton's image below COPY ${k + 1} is not in storage`);
        const { parent: at } = await parentOf(d, image.id, r.docker);
        parent = { ...at, id: r.prefix.id, layers: kept.slice(0, stepOf[k]) };
      }
      bases.push({ plan, ...r.made[k]!.target, copies: r.made.slice(k + 1).map((m) => m.target), ...(parent ? { parent } : {}) });
    }
    await d.bases.save(f.project, {
      key: baseKey(f),
      commit: f.commit,
      containerfileDigest: sha256(r.text),
      ignoreDigest: await ignoreDigest(f.contextDir),
      reads: reads.plan,
      copy: bases.at(-1)!,
      starts: bases.slice(0, -1).reverse(),
      manifest: r.manifest,
      config: r.config,
      baseImages: f.baseImages,
    });
    const starts = bases.length - 1;
    return `the next build of a source change can start from this one${starts > 0 ? `; a change an earlier step reads starts from ${starts === 1 ? "an earlier COPY" : `one of ${starts} earlier COPYs`}` : ""}`;
  } catch (e) {
    await d.bases.remove(f.project, (e as Error).message);
    return `not available after this build: ${(e as Error).message}`;
  }
}
