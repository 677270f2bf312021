// kiln's base layer store: the FROM images' layers, downloaded and unpacked by kiln side by side
// before buildah starts, where containers/storage's overlay driver finds them (its "additional
// layer store": <dir>/<compressed digest>/{diff,info,blob}, named in storage.conf). buildah's
// pull then takes each layer from here by reference (a symlink to diff) instead of applying it
// itself, one layer after the other. A cold pull of the node base went from podman's 3-4 s to
// about 1 s (README, Performance, session 15).
//
// Only what kiln is sure of comes from here: gzip layers whose blob matches its digest and whose
// tar matches the config's diff_id, unpacked as unpack-layer.ts says. Anything else (another
// compression, an index with no single match for this machine, an unusual layer, any error) is
// left to buildah's own pull, and the build log says so. A layer directory is complete when its
// info file is there: it is made under another name and renamed into place.
//
// The store is on the volume. Layers no image in storage uses any more are removed after a
// prune that removed images (collect), never while a build holds them; a reset empties it with container storage.
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { arch } from "node:os";
import { join } from "node:path";
import { DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, RegistryClient, type Descriptor } from "../registry/client.js";
import type { RegistryCredentials } from "../registry/credentials.js";
import { parseImageName } from "./base-images.js";
import { writeFileAtomic } from "../util/fs-atomic.js";
import { createSlots } from "../util/slots.js";
import { unpackLayer, UnusualLayer } from "./unpack-layer.js";
import { STORAGE_GZIP, storedLayerRecords } from "../podman/stored-image.js";

const GZIP_LAYERS = new Set([OCI_LAYER_GZIP, DOCKER_LAYER_GZIP]);
const INDEXES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const INCOMING = ".incoming-";
/** Notes of the images' layers, by manifest digest. */
const MANIFESTS = ".manifests";
/** At most this many layers download and unpack at once, on the whole machine (each is a gunzip and a tar). */
const PARALLEL = 4;
/**
 * What buildah prints when it lets go of a layer from the store: storage asks the store to clean
 * up by removing the layer's directory, which a plain directory store refuses. Not an error.
 */
export const LAYER_STORE_NOTICE = /level=warning msg="Unexpected error by Additional Layer Store .* during release; GC doesn't seem to be supported"/;

export interface BaseImage {
  reference: string;
  digest: string;
}

export interface EnsureOptions {
  credentials: RegistryCredentials;
  insecure: ReadonlySet<string>;
  signal: AbortSignal;
  env: Record<string, string>;
  /** What kiln does for each image, for the build log: before it unpacks, and after. */
  say(line: string): void;
}

export interface EnsureReport {
  /** Lets the collector have this build's layers again (after buildah's pull). */
  release(): void;
  /**
   * The images storage does not have (every layer of them unpacked by kiln or in storage): no
   * step of buildah's layer cache stands on them (the first build, fastpath/first-build.ts).
   */
  fresh: FreshImage[];
}

/** A FROM image storage does not have, with its layers and their diff IDs. */
export interface FreshImage {
  reference: string;
  digest: string;
  layers: Descriptor[];
  diffIds: string[];
}

export interface BaseLayerStore {
  readonly dir: string;
  /** Makes every layer of these images that storage lacks available in the store. */
  ensure(images: readonly BaseImage[], o: EnsureOptions): Promise<EnsureReport>;
  /** Removes the layers no image in storage refers to, and unfinished ones; returns how many. */
  collect(): Promise<number>;
  /** Empties the store (a reset of container storage). */
  clear(): Promise<void>;
  /** Where a layer's blob is, when kiln downloaded it (a layer storage pulled itself has none). */
  blobPath(digest: string): string;
}

interface ImageLayers {
  layers: Descriptor[];
  diffIds: string[];
  /** The config's digest: the image's ID in storage (absent in notes of kilnds before it was kept). */
  config?: string;
}

export function createBaseLayerStore(dir: string, graphRoot: string): BaseLayerStore {
  /** Layers a build is unpacking or about to let buildah pull: the collector leaves them. */
  const held = new Map<string, number>();
  /** One unpacking per layer, whichever builds want it. */
  const unpacking = new Map<string, Promise<void>>();
  const hold = (digests: string[]) => {
    for (const d of digests) held.set(d, (held.get(d) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const d of digests) {
        const n = (held.get(d) ?? 1) - 1;
        if (n > 0) held.set(d, n);
        else held.delete(d);
      }
    };
  };
  /** Downloads and unpacks at once, across every build's images. */
  const slots = createSlots(PARALLEL);
  const present = (digest: string) => stat(join(dir, digest, "info")).then(() => true, () => false);

  /** The compressed digests of the layers storage has applied itself (its layers.json). */
  async function storageLayers(): Promise<Set<string>> {
    const records = await storedLayerRecords(graphRoot).catch(() => []);
    return new Set(records.flatMap((l) => (l["compressed-diff-digest"] ? [l["compressed-diff-digest"]] : [])));
  }

  async function unpackOne(client: () => RegistryClient, layer: Descriptor, diffId: string, o: EnsureOptions): Promise<void> {
    const target = join(dir, layer.digest);
    const incoming = join(dir, `${INCOMING}${layer.digest.replace(/^sha256:/, "")}-${randomBytes(4).toString("hex")}`);
    try {
      await mkdir(join(incoming, "diff"), { recursive: true });
      const got = await unpackLayer(await client().blobStream(layer.digest), incoming, { env: o.env, signal: o.signal });
      if (got.digest !== layer.digest) throw new UnusualLayer(`layer ${layer.digest} arrived as ${got.digest}`);
      if (got.diffId !== diffId) throw new UnusualLayer(`layer ${layer.digest} unpacks to ${got.diffId}, its config says ${diffId}`);
      const info = { "compressed-diff-digest": got.digest, "compressed-size": got.compressedSize, "diff-digest": got.diffId, "diff-size": got.diffSize, compression: STORAGE_GZIP };
      // Storage announces each use by creating "use" in the layer's directory and warns unless
      // that fails with ENOENT: a link to nowhere says "no garbage collector here" quietly.
      await symlink(join(dir, ".none", "use"), join(incoming, "use"));
      await writeFile(join(incoming, "info"), JSON.stringify(info));
      await rename(incoming, target);
    } catch (e) {
      await rm(incoming, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * The image's layers and diff_ids: from the store's note of the manifest (a digest names one
   * manifest for good), else from the registry, noted for the next build.
   */
  async function layersOf(reference: string, digest: string, o: EnsureOptions): Promise<{ client: () => RegistryClient; image: ImageLayers } | string> {
    const name = parseImageName(reference);
    if (!name) return "not in a registry";
    let made: RegistryClient | undefined;
    const client = () =>
      (made ??= new RegistryClient(name.registry, name.repository, o.insecure.has(name.registry), {
        credential: () => o.credentials.lookup(name.registry, name.repository),
        signal: o.signal,
      }));
    const note = join(dir, MANIFESTS, `${digest.replace(/^sha256:/, "")}.json`);
    const noted = await readFile(note, "utf8").then((t) => JSON.parse(t) as ImageLayers, () => undefined);
    if (noted) return { client, image: noted };
    let m = await client().getAnyManifest(digest);
    if (INDEXES.has(m.mediaType)) {
      const goArch = ({ x64: "amd64", arm64: "arm64", arm: "arm" } as Record<string, string>)[arch()] ?? arch();
      const entries = ((m.json as { manifests?: { digest: string; platform?: { os?: string; architecture?: string } }[] }).manifests ?? []).filter(
        (e) => e.platform?.os === "linux" && e.platform.architecture === goArch,
      );
      if (entries.length !== 1) return `an index with ${entries.length} linux/${goArch} images`;
      m = await client().getAnyManifest(entries[0]!.digest);
    }
    const manifest = m.json as { config?: Descriptor; layers?: Descriptor[] };
    if (!manifest.config || !manifest.layers) return `a ${m.mediaType || "manifest of no type"}`;
    const config = JSON.parse((await client().getBlob(manifest.config.digest)).toString("utf8")) as { rootfs?: { diff_ids?: string[] } };
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== manifest.layers.length) return "a config whose diff_ids do not match its layers";
    const other = manifest.layers.find((l) => !GZIP_LAYERS.has(l.mediaType));
    if (other) return `a ${other.mediaType} layer`;
    const image = { layers: manifest.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })), diffIds, config: manifest.config.digest };
    await mkdir(join(dir, MANIFESTS), { recursive: true });
    await writeFileAtomic(note, JSON.stringify(image));
    return { client, image };
  }

  return {
    dir,
    async ensure(images, o) {
      const holds: (() => void)[] = [];
      const release = () => holds.forEach((r) => r());
      const news: EnsureReport["fresh"] = [];
      // Read only when a layer is not in the store (a base podman pulled itself, before the store).
      let inStorage: Promise<Set<string>> | undefined;
      const ensureImage = async (img: BaseImage) => {
        const t0 = Date.now();
        try {
          const found = await layersOf(img.reference, img.digest, o);
          if (typeof found === "string") {
            o.say(`${img.reference}: ${found}; buildah pulls it`);
            return;
          }
          const { client, image } = found;
          // Not in storage: buildah's cache holds no step on it (a step's cache entry names the image it stood on).
          const isNew = image.config !== undefined && !(await stat(join(graphRoot, "overlay-images", image.config.replace(/^sha256:/, ""))).then(() => true, () => false));
          const wanted: { layer: Descriptor; diffId: string }[] = [];
          for (const [i, layer] of image.layers.entries()) {
            if ((await present(layer.digest)) || (await (inStorage ??= storageLayers())).has(layer.digest)) continue;
            wanted.push({ layer, diffId: image.diffIds[i]! });
          }
          const fresh = () => ({ reference: img.reference, digest: img.digest, layers: image.layers, diffIds: image.diffIds });
          if (wanted.length === 0) {
            if (isNew) news.push(fresh());
            return;
          }
          holds.push(hold(wanted.map((w) => w.layer.digest)));
          const mb = (wanted.reduce((n, w) => n + w.layer.size, 0) / 1e6).toFixed(1);
          o.say(`${img.reference}: unpacking ${wanted.length} of ${image.layers.length} layers (${mb} MB) side by side`);
          // Each layer on its own: one kiln cannot unpack is downloaded by buildah, the rest linked.
          const failed: string[] = [];
          let bytes = 0;
          await Promise.all(
            wanted.map(async (w) => {
              let p = unpacking.get(w.layer.digest);
              if (!p) {
                p = slots.run(() => unpackOne(client, w.layer, w.diffId, o), o.signal).finally(() => unpacking.delete(w.layer.digest));
                unpacking.set(w.layer.digest, p);
              }
              await p.then(() => void (bytes += w.layer.size)).catch((e: unknown) => {
                if (o.signal.aborted) throw e;
                failed.push(`layer ${w.layer.digest.slice(0, 19)}: ${e instanceof UnusualLayer ? e.message : `could not unpack it (${(e as Error).message})`}`);
              });
            }),
          );
          const done = wanted.length - failed.length;
          if (done > 0) o.say(`${img.reference}: ${done} of ${image.layers.length} layers (${(bytes / 1e6).toFixed(1)} MB) unpacked by kiln in ${Date.now() - t0} ms; buildah takes them from kiln's layer store`);
          if (isNew && failed.length === 0) news.push(fresh());
          for (const f of failed) o.say(`${img.reference}: ${f}; buildah pulls it`);
        } catch (e) {
          if (o.signal.aborted) throw e;
          const why = e instanceof UnusualLayer ? e.message : `could not unpack its layers (${(e as Error).message})`;
          o.say(`${img.reference}: ${why}; buildah pulls it`);
        }
      };
      // Every FROM image at once (a multi-stage build's bases overlap), sharing the store's slots.
      const all = await Promise.allSettled(images.map(ensureImage));
      const stopped = all.find((r) => r.status === "rejected");
      if (stopped) {
        release();
        throw stopped.reason;
      }
      return { release, fresh: news };
    },
    async collect() {
      const used = new Set<string>();
      const overlay = join(graphRoot, "overlay");
      for (const id of await readdir(overlay).catch(() => [] as string[])) {
        const path = await readFile(join(overlay, id, "additionallayer"), "utf8").catch(() => undefined);
        if (path) used.add(path.trim());
      }
      let removed = 0;
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (name === MANIFESTS) continue;
        const digest = name.startsWith(INCOMING) ? `sha256:${name.slice(INCOMING.length).split("-")[0]}` : name;
        if (held.has(digest) || used.has(join(dir, name))) continue;
        await rm(join(dir, name), { recursive: true, force: true });
        removed++;
      }
      return removed;
    },
    async clear() {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    },
    blobPath: (digest) => join(dir, digest, "blob"),
  };
}
