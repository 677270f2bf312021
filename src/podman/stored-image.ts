// An image as containers/storage keeps it on the volume, read from its files without podman: its
// manifest and config (byte for byte), its layers from the bottom up, and a layer's tar as it
// was committed, put back together from storage's tar-split record (the tar's headers and
// padding, kept when the layer was applied) and the layer's files in its diff directory. The
// tar is what a push of the layer compresses; its sha256 is the layer's diff ID, which the reader
// checks before anything leaves the machine.
//
// storage's files (overlay-images/images.json, overlay-layers/layers.json, an image's big-data
// files) are each replaced by a rename when storage changes them, so a read sees one whole
// version. Whatever does not read as expected is a StoredImageUnreadable: the caller takes
// podman's way instead.
import { closeSync, createReadStream, openSync, readSync } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createGunzip } from "node:zlib";
import { sha256 } from "../registry/client.js";

export class StoredImageUnreadable extends Error {}

export interface StoredLayer {
  /** storage's ID of the layer (its directory under overlay/). */
  id: string;
  /** sha256 of the layer's tar. */
  diffId: string;
  diffSize: number;
  /** The compressed blob storage applied the layer from (a pulled layer), when it was gzip. */
  gzipDigest?: string;
  gzipSize?: number;
}

export interface StoredManifest {
  mediaType: string;
  config: { mediaType: string; digest: string; size: number };
  layers: { mediaType: string; digest: string; size: number }[];
}

export interface StoredImage {
  id: string;
  manifest: StoredManifest;
  config: Buffer;
  /** From the bottom up, one for each of the manifest's layers. */
  layers: StoredLayer[];
}

/** containers/storage's gzip, in a layer's record (archive.Gzip). */
export const STORAGE_GZIP = 2;

/**
 * The file storage keeps an image's big-data item in: the key itself when it is made of
 * lowercase letters, digits and dots, else "=" and its base64 (containers/storage's rule).
 */
export function bigDataFile(graphRoot: string, imageId: string, key: string): string {
  const plain = /^[a-z0-9.]*$/.test(key);
  return join(graphRoot, "overlay-images", imageId, plain ? key : `=${Buffer.from(key).toString("base64")}`);
}

async function readJson<T>(file: string, what: string): Promise<T> {
  const text = await readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
    throw new StoredImageUnreadable(`${what}: ${e.code ?? e.message}`);
  });
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new StoredImageUnreadable(`${what} is not JSON`);
  }
}

/** storage's list of images (overlay-images/images.json). */
const storedImageRecords = (graphRoot: string) => readJson<{ id: string; layer?: string }[]>(join(graphRoot, "overlay-images", "images.json"), "storage's image list");

/** storage's list of layers (overlay-layers/layers.json), as it is. */
export const storedLayerRecords = (graphRoot: string) => readJson<LayerRecord[]>(join(graphRoot, "overlay-layers", "layers.json"), "storage's layer list");

/** A layer's record as kiln reads it; undefined for none, or one without a diff ID. */
function storedLayer(r: LayerRecord | undefined): StoredLayer | undefined {
  if (!r?.["diff-digest"] || r["diff-size"] === undefined) return undefined;
  const gzip = r.compression === STORAGE_GZIP && r["compressed-diff-digest"] && r["compressed-size"] !== undefined;
  return { id: r.id, diffId: r["diff-digest"], diffSize: r["diff-size"], ...(gzip ? { gzipDigest: r["compressed-diff-digest"]!, gzipSize: r["compressed-size"]! } : {}) };
}

export interface LayerRecord {
  id: string;
  parent?: string;
  "diff-digest"?: string;
  "diff-size"?: number;
  "compressed-diff-digest"?: string;
  "compressed-size"?: number;
  compression?: number;
}

/** The image (full ID, with or without "sha256:"), checked whole: manifest, config and layers agree. */
export async function readStoredImage(graphRoot: string, imageId: string): Promise<StoredImage> {
  const id = imageId.replace(/^sha256:/, "");
  const image = (await storedImageRecords(graphRoot)).find((i) => i.id === id);
  if (!image) throw new StoredImageUnreadable(`image ${id.slice(0, 12)} is not in storage's image list`);
  const manifestBytes = await readFile(bigDataFile(graphRoot, id, "manifest")).catch(() => undefined);
  if (!manifestBytes) throw new StoredImageUnreadable(`image ${id.slice(0, 12)} has no manifest in storage`);
  let manifest: StoredManifest;
  try {
    manifest = JSON.parse(manifestBytes.toString("utf8")) as StoredManifest;
  } catch {
    throw new StoredImageUnreadable(`image ${id.slice(0, 12)}'s manifest is not JSON`);
  }
  if (manifest.config?.digest !== `sha256:${id}`) throw new StoredImageUnreadable(`image ${id.slice(0, 12)}'s manifest names another config`);
  const config = await readFile(bigDataFile(graphRoot, id, manifest.config.digest)).catch(() => undefined);
  if (!config || sha256(config) !== manifest.config.digest) throw new StoredImageUnreadable(`image ${id.slice(0, 12)}'s config in storage is missing or not its own`);
  const diffIds = (JSON.parse(config.toString("utf8")) as { rootfs?: { diff_ids?: string[] } }).rootfs?.diff_ids ?? [];

  const byId = new Map((await storedLayerRecords(graphRoot)).map((r) => [r.id, r]));
  const chain: StoredLayer[] = [];
  for (let at = image.layer; at; at = byId.get(at)?.parent) {
    const l = storedLayer(byId.get(at));
    if (!l) throw new StoredImageUnreadable(`layer ${at.slice(0, 12)} is not in storage's layer list, or has no diff ID`);
    chain.unshift(l);
    if (chain.length > 1000) throw new StoredImageUnreadable("the layer chain does not end");
  }
  // A layer that changes nothing is in no list but storage's chain: the three must agree exactly.
  const same = (a: string[]) => a.length === chain.length && a.every((d, n) => d === chain[n]!.diffId);
  if (!same(diffIds)) throw new StoredImageUnreadable(`image ${id.slice(0, 12)}'s config and its layers in storage differ`);
  if (!same(manifest.layers.map((l) => l.digest))) throw new StoredImageUnreadable(`image ${id.slice(0, 12)}'s manifest does not list its layers uncompressed`);
  return { id, manifest, config, layers: chain };
}

/**
 * The top layer of the image whose ID starts with idPrefix (buildah prints 11 or 12 characters
 * of a step's image), when storage lists exactly one such image; undefined otherwise.
 */
export async function storedTopLayer(graphRoot: string, idPrefix: string): Promise<StoredLayer | undefined> {
  if (!/^[0-9a-f]{11,64}$/.test(idPrefix)) return undefined;
  const found = (await storedImageRecords(graphRoot)).filter((i) => i.id.startsWith(idPrefix));
  if (found.length !== 1 || !found[0]!.layer) return undefined;
  return storedLayer((await storedLayerRecords(graphRoot)).find((l) => l.id === found[0]!.layer));
}

interface TarSplitEntry {
  type: number;
  name?: string;
  name_raw?: string;
  size?: number;
  payload?: string | null;
}

/** tar-split's kinds of entry: a file's body (read from the diff directory), or bytes kept as they were. */
const FILE = 1;
const SEGMENT = 2;

/**
 * The layer's tar, in the pieces it is made of, put back together from storage's tar-split
 * record and the layer's diff directory. Not checked here: the caller hashes what it reads
 * against the diff ID.
 */
export async function* storedLayerTar(graphRoot: string, layerId: string): AsyncGenerator<Buffer> {
  const record = join(graphRoot, "overlay-layers", `${layerId}.tar-split.gz`);
  const diff = join(graphRoot, "overlay", layerId, "diff");
  if (!(await access(record).then(() => true, () => false))) throw new StoredImageUnreadable(`layer ${layerId.slice(0, 12)} has no tar-split record`);
  const lines = createInterface({ input: createReadStream(record).pipe(createGunzip()), crlfDelay: Infinity });
  let files = 0;
  for await (const line of lines) {
    if (!line) continue;
    const e = JSON.parse(line) as TarSplitEntry;
    if (e.type === SEGMENT) {
      if (e.payload) yield Buffer.from(e.payload, "base64");
    } else if (e.type === FILE) {
      const size = e.size ?? 0;
      if (size === 0) continue;
      // A name that is not UTF-8 (kept raw): podman's way, which reads it as bytes.
      if (e.name_raw) throw new StoredImageUnreadable(`layer ${layerId.slice(0, 12)} has a file name that is not UTF-8`);
      if (++files % YIELD_EVERY === 0) await new Promise<void>((r) => setImmediate(r));
      yield* fileBody(join(diff, e.name ?? ""), size, layerId);
    } else {
      throw new StoredImageUnreadable(`layer ${layerId.slice(0, 12)}'s tar-split has an entry of type ${e.type}`);
    }
  }
}

// Files are read with the synchronous calls (a layer of thousands of small files: the thread
// pool's round trip per call costs more than the read, fastpath/layer.ts); the event loop gets
// its turn every YIELD_EVERY files, and a large file comes in pieces.
const YIELD_EVERY = 256;
const READ_PIECE = 4 * 1024 * 1024;

function* fileBody(path: string, size: number, layerId: string): Generator<Buffer> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    throw new StoredImageUnreadable(`layer ${layerId.slice(0, 12)}: a file of its tar is not in its diff directory`);
  }
  try {
    for (let at = 0; at < size; ) {
      const piece = Buffer.allocUnsafe(Math.min(READ_PIECE, size - at));
      let filled = 0;
      while (filled < piece.length) {
        const n = readSync(fd, piece, filled, piece.length - filled, at + filled);
        if (n === 0) throw new StoredImageUnreadable(`layer ${layerId.slice(0, 12)}: a file of its tar is shorter in its diff directory`);
        filled += n;
      }
      at += filled;
      yield piece;
    }
  } finally {
    closeSync(fd);
  }
}
