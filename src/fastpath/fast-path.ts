// kiln's fast path. Git says exactly which files changed since the project's last full build;
// when none of them reaches a step before the final COPY (and the Containerfile, the ignore file
// and the request are the same), every layer below that COPY is the one already in the registry.
// kiln then makes the COPY's layer itself, writes the image config and manifest, and pushes the
// new blobs: no podman, tens of milliseconds. Whenever it cannot be sure, it says why and the
// full build runs. test/integration/fast-path.test.ts holds it to a full build's filesystem and
// config on several apps and kinds of change.
import { lstat, readFile } from "node:fs/promises";
import { join, posix } from "node:path";
import dockerignore from "@balena/dockerignore";
import { labelLine } from "../podman/labels.js";
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RegistryClient, sha256, type OciManifest } from "../registry/client.js";
import type { RegistryCredentials } from "../registry/credentials.js";
import { baseKey, type BaseKeyInput, type BaseStore, type FastPathBase, type ImageConfig } from "./base.js";
import type { CopyPlan } from "./plan.js";
import { FastPathRefused } from "./refused.js";
import type { TarEntry } from "../image/tar-entries.js";

// The package is CommonJS (module.exports = factory) while its types declare an ES default export.
const ignore = dockerignore as unknown as typeof dockerignore.default;

/** The largest final layer the fast path reads back or makes (bigger ones take the full build). */
const MAX_LAYER_BYTES = 64 * 1024 * 1024;
const IGNORE_FILES = [".containerignore", ".dockerignore"];

export interface FastPathInput extends BaseKeyInput {
  project: string;
  commit: string;
  registry: string;
  /** The bare git repository of the project's cache. */
  gitDir: string;
  /** The checkout, the context in it and the Containerfile's absolute path. */
  checkout: string;
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
}

export interface FastPathResult {
  digest: string;
  steps: { total: number; reused: number };
  /** The config's digest: what podman calls the image ID. */
  imageId: string;
  files: number;
  bytes: number;
}

export interface FastPathOptions {
  bases: BaseStore;
  insecureRegistries: ReadonlySet<string>;
}

export function createFastPath(o: FastPathOptions) {
  const clientFor = (input: FastPathInput) => {
    const repo = input.repository.slice(input.registry.length + 1);
    return new RegistryClient(input.registry, repo, o.insecureRegistries.has(input.registry), {
      credential: () => input.credentials.lookup(input.registry, repo),
      signal: input.signal,
    });
  };

  /**
   * After a successful full build and push: remembers it as the project's base, or forgets the
   * old base when this build's Containerfile cannot be taken. Returns why not, if not.
   */
  async function record(input: FastPathInput, digest: string, labelsAsFlags: boolean): Promise<string | undefined> {
    try {
      if (labelsAsFlags) throw new FastPathRefused("kiln's labels went as --label flags");
      if (!input.baseImages) throw new FastPathRefused("a FROM image could not be looked up at its registry");
      const [{ planFastPath }, { readLayer }] = await Promise.all([import("./plan.js"), import("../image/tar-entries.js")]);
      const text = await readFile(input.containerfilePath, "utf8");
      const planned = planFastPath(text, input.target || undefined);
      if (!planned.ok) throw new FastPathRefused(planned.reason);
      const plan = planned.plan;
      const registry = clientFor(input);
      const { manifest } = await registry.getManifest(digest);
      const config = JSON.parse((await registry.getBlob(manifest.config.digest)).toString("utf8")) as ImageConfig;
      checkShape(manifest, config);
      // A base's ONBUILD triggers run right after FROM and may read the context: kiln does not see them.
      const triggers = (config.history ?? []).filter((h) => /(^|#\(nop\)\s+)ONBUILD\s/.test(h.created_by ?? "")).length;
      if (triggers > plan.onbuild) throw new FastPathRefused("the base image has ONBUILD triggers");
      const last = manifest.layers.at(-1)!;
      if (last.size > MAX_LAYER_BYTES) throw new FastPathRefused("the final COPY's layer is over 64 MiB");
      const dest = resolveDest(config, plan.dest);
      const entries = await readLayer(await registry.getBlob(last.digest));
      const destPath = dest.replace(/^\/+|\/+$/g, "");
      // The copied files must be where the COPY says (not behind a symlinked directory in the image).
      if (!entries.some((e) => e.type !== "directory" && (destPath === "" || e.path === destPath || e.path.startsWith(`${destPath}/`)))) {
        throw new FastPathRefused("the last full build's COPY layer has no file at the COPY's destination");
      }
      const ancestors = entries.filter((e) => e.type === "directory" && (destPath === e.path || destPath.startsWith(`${e.path}/`) || e.path === ""));
      const fileDest = await fileDestOf(input.contextDir, plan, destPath, entries);
      let owner = { uid: 0, gid: 0 };
      if (plan.chown) {
        const copied = entries.find((e) => e.type === "file" && (destPath === "" || e.path.startsWith(`${destPath}/`)));
        if (!copied) throw new FastPathRefused("--chown: no copied file in the last full build's layer shows the owner");
        owner = { uid: copied.uid, gid: copied.gid };
      }
      await o.bases.save(input.project, {
        key: baseKey(input),
        commit: input.commit,
        containerfileDigest: sha256(text),
        ignoreDigest: await ignoreDigest(input.contextDir),
        plan,
        dest,
        ancestors,
        ...(fileDest ? { fileDest } : {}),
        owner,
        manifest,
        config,
        baseImages: input.baseImages,
      });
      return undefined;
    } catch (e) {
      // Registry trouble included: without a base the next build is a full one, never a wrong one.
      await o.bases.remove(input.project, (e as Error).message);
      return (e as Error).message;
    }
  }

  /** Builds and pushes the image without podman, or throws FastPathRefused saying why not. */
  /**
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
    if (/^\s*!/m.test(ignoreText)) throw new FastPathRefused("the ignore file has exceptions (!)");
    const [{ checkChanges }, { makeLayer }] = await Promise.all([import("./changes.js"), import("./layer.js")]);
    const ig = ignore().add(ignoreText.split(/\r?\n/));
    const ignored = (p: string) => ig.ignores(p);
    await checkChanges(input, base.commit, base.plan.earlier, base.plan.sources, ignored);

    const layer = await makeLayer({
      contextDir: input.contextDir,
      sources: base.plan.sources,
      dest: base.dest,
      owner: base.owner,
      ancestors: base.ancestors,
      ...(base.fileDest ? { fileDest: base.fileDest } : {}),
      ignored,
      maxBytes: MAX_LAYER_BYTES,
    });
    const config = nextConfig(base, layer.diffId, input.labels);
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = sha256(configBytes);
    const manifest: OciManifest = {
      ...base.manifest,
      // The media types are the last full build's (OCI, or Docker's with --image-format docker).
      config: { mediaType: base.manifest.config.mediaType || OCI_CONFIG, digest: configDigest, size: configBytes.length },
      layers: [...base.manifest.layers.slice(0, -1), { mediaType: base.manifest.layers.at(-1)?.mediaType || OCI_LAYER_GZIP, digest: layer.digest, size: layer.gz.length }],
    };
    onMade?.(Date.now() - t0);
    const registry = clientFor(input);
    await Promise.all([registry.putBlob(layer.digest, layer.gz), registry.putBlob(configDigest, configBytes)]);
    // The tag is the one step that cannot be taken back: never after a cancel.
    input.signal.throwIfAborted();
    onCommit?.();
    const digest = await registry.putManifest(input.commit, Buffer.from(JSON.stringify(manifest)), base.manifest.mediaType ?? OCI_MANIFEST);
    return { digest, imageId: configDigest, files: layer.files, bytes: layer.bytes, steps: base.plan.steps };
  }

  /** Loads the parser and the tar writer (kilnd calls it once it answers, off the wake path). */
  async function preload(): Promise<void> {
    await Promise.all([import("./plan.js"), import("./layer.js"), import("../image/tar-entries.js")]);
  }

  return { record, build, preload };
}

export type FastPath = ReturnType<typeof createFastPath>;

/** The image must end with the COPY's layer followed only by metadata steps. */
function checkShape(manifest: OciManifest, config: ImageConfig): void {
  const history = config.history ?? [];
  const withLayers = history.filter((h) => !h.empty_layer);
  if (manifest.layers.length === 0 || withLayers.length !== manifest.layers.length || config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new FastPathRefused("the image's history does not line up with its layers");
  }
  if (!/\bCOPY\b/.test(withLayers.at(-1)!.created_by ?? "")) throw new FastPathRefused("the image's last layer is not the final COPY's");
}

/**
 * One file copied to a destination without "/": written as the destination itself, or into it
 * when the image below has a directory there. The last full build's layer says which; undefined
 * when the source is a directory (or there are several, or the destination ends with "/").
 */
async function fileDestOf(contextDir: string, plan: CopyPlan, destPath: string, entries: TarEntry[]): Promise<"file" | "into-dir" | undefined> {
  if (plan.sources.length !== 1 || plan.dest.endsWith("/")) return undefined;
  const source = plan.sources[0]!;
  const st = await lstat(join(contextDir, source));
  if (!st.isFile()) return undefined;
  if (entries.some((e) => e.type !== "directory" && e.path === destPath)) return "file";
  if (entries.some((e) => e.path === `${destPath}/${posix.basename(source)}`)) return "into-dir";
  throw new FastPathRefused("the last full build's COPY layer does not show where the file went");
}

function resolveDest(config: ImageConfig, dest: string): string {
  const abs = posix.resolve(config.config?.WorkingDir || "/", dest);
  return dest.endsWith("/") && abs !== "/" ? `${abs}/` : abs;
}

/** The full build's config with the new layer, kiln's new labels and fresh times. */
function nextConfig(base: FastPathBase, diffId: string, labels: Record<string, string>): ImageConfig {
  const now = new Date().toISOString();
  const config = structuredClone(base.config);
  config.created = now;
  config.config = { ...config.config, Labels: { ...config.config?.Labels, ...labels } };
  config.rootfs.diff_ids[config.rootfs.diff_ids.length - 1] = diffId;
  const history = config.history ?? [];
  const copyStep = history.findLastIndex((h) => !h.empty_layer);
  history[copyStep] = {
    ...history[copyStep],
    created: now,
    created_by: `/bin/sh -c #(nop) COPY ${diffId.replace("sha256:", "layer:")} in ${base.plan.dest} `,
    comment: `kiln fast path from ${base.commit.slice(0, 12)}`,
  };
  const labelStep = history.findLastIndex((h) => h.created_by?.includes("#(nop) LABEL"));
  if (labelStep > copyStep) history[labelStep] = { ...history[labelStep], created: now, created_by: `/bin/sh -c #(nop) ${labelLine(labels)}` };
  return config;
}

async function readIgnore(contextDir: string): Promise<string> {
  for (const name of IGNORE_FILES) {
    try {
      return await readFile(join(contextDir, name), "utf8");
    } catch {
      // next
    }
  }
  return "";
}

const ignoreDigest = async (contextDir: string) => sha256(await readIgnore(contextDir));
