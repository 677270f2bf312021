// kiln's push of a full build: the image buildah committed, read from storage's files
// (podman/stored-image.ts) and sent with kiln's registry client, instead of a podman push.
// What goes up is the image in storage: its config byte for byte (so the registry's image has
// the local image's ID), and each layer's tar as storage committed it (checked against its diff
// ID), compressed by kiln. Only the compression differs from podman's push, as it differs
// between any two pushers. What it saves is podman's start and its look at every layer: on a
// warm build of a few small new layers, most of the push.
//
// A layer's blob is, in this order: the one the registry already has (a pulled layer's own
// gzip blob, or the blob kiln made of the layer before: registry/blob-notes.ts), a FROM layer
// mounted from its repository on the same registry or uploaded from kiln's layer store, else
// the layer's tar compressed now. Anything it cannot do so (a layer storage has no record of, an
// image whose files do not agree) is a DirectPushRefused: the caller pushes with podman, and the
// build log says why. A layer whose files are not the tar its image records fails the build:
// storage is damaged, and podman's push would send it as it is.
import { readFile } from "node:fs/promises";
import { KilnError } from "../errors/kiln-error.js";
import { createTarCompressor, type Compressed } from "../image/layer-gzip.js";
import { readStoredImage, storedLayerTar, storedTopLayer, StoredImageUnreadable, type StoredLayer } from "../podman/stored-image.js";
import type { BlobNote, BlobNotes } from "../registry/blob-notes.js";
import { DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_LAYER_GZIP, OCI_MANIFEST, sha256, type Descriptor, type RegistryClient } from "../registry/client.js";
import { createSlots } from "../util/slots.js";

export class DirectPushRefused extends Error {}

/** The push outlasted its deadline: the registry stopped answering (podman's push would wait as long). */
export class DirectPushTimedOut extends Error {
  constructor(
    readonly ms: number,
    readonly bytes: number,
  ) {
    super(`the push did not finish within ${Math.round(ms / 1000)} s`);
  }
}

export interface DirectPushInput {
  graphRoot: string;
  /** The image buildah made (its full ID). */
  imageId: string;
  /** A client for the build's repository whose every call stops when the signal aborts. */
  client(signal: AbortSignal): RegistryClient;
  /** The tag: the commit. */
  tag: string;
  format: "docker" | "oci";
  notes: BlobNotes;
  /** Repositories of the same registry the FROM images come from: their layers are mounted from there. */
  mountFrom: readonly string[];
  /** kiln's layer store's copy of a FROM layer's blob (images/layer-store.ts). */
  storedBlob(digest: string): string;
  /** The whole push's deadline, by the image's size (its layers' tars). */
  deadlineMs(bytes: number): number;
  /** The build's: a cancel. */
  signal: AbortSignal;
  /** Layers sent while buildah still ran (createEarlyUploads). */
  early?: EarlyUploads;
}

export interface DirectPushResult {
  digest: string;
  /** Layers compressed and uploaded by this push, and their bytes (compressed). */
  uploaded: number;
  uploadedBytes: number;
  /** Of those, sent while buildah ran (EarlyUploads). */
  early: number;
}

/** Layers compressed at once (each uses every core for its pieces). */
const LAYERS_AT_ONCE = 2;
/** A larger layer goes up with podman: kiln holds a layer's blob in memory while it uploads it. */
const MAX_DIRECT_LAYER_BYTES = 2 * 1024 ** 3;

export async function pushStoredImage(i: DirectPushInput): Promise<DirectPushResult> {
  let image;
  try {
    image = await readStoredImage(i.graphRoot, i.imageId);
  } catch (e) {
    throw e instanceof StoredImageUnreadable ? new DirectPushRefused(e.message) : e;
  }
  const [manifestType, layerType] = i.format === "docker" ? [DOCKER_MANIFEST, DOCKER_LAYER_GZIP] : [OCI_MANIFEST, OCI_LAYER_GZIP];
  if (image.manifest.mediaType !== manifestType) throw new DirectPushRefused(`the image in storage has a ${image.manifest.mediaType} manifest, the push is ${i.format}`);
  const big = image.layers.find((l) => l.diffSize > MAX_DIRECT_LAYER_BYTES && !l.gzipDigest);
  if (big) throw new DirectPushRefused(`layer ${big.id.slice(0, 12)} is ${(big.diffSize / 1024 ** 3).toFixed(1)} GiB`);

  // Every call of the push stops at its deadline, as podman's push is stopped at it.
  const bytes = image.layers.reduce((n, l) => n + l.diffSize, 0);
  const ms = Math.ceil(i.deadlineMs(bytes));
  const deadline = AbortSignal.timeout(ms);
  const signal = AbortSignal.any([i.signal, deadline]);
  const registry = i.client(signal);
  const upload = (digest: string, blob: Buffer) => registry.putBlob(digest, blob, ms);
  const compressing = createSlots(LAYERS_AT_ONCE);
  let uploaded = 0;
  let uploadedBytes = 0;
  let early = new Map<string, BlobNote>();
  let earlyUsed = 0;
  const blobOf = async (l: StoredLayer): Promise<Descriptor> => {
    const as = (digest: string, size: number): Descriptor => ({ mediaType: layerType, digest, size });
    const before = early.get(l.diffId);
    if (before) {
      earlyUsed++;
      uploaded++;
      uploadedBytes += before.size;
      return as(before.digest, before.size);
    }
    if (l.gzipDigest && (await registry.hasBlob(l.gzipDigest))) return as(l.gzipDigest, l.gzipSize!);
    const note = await i.notes.get(l.diffId);
    if (note && (await registry.hasBlob(note.digest))) return as(note.digest, note.size);
    if (l.gzipDigest) {
      for (const from of i.mountFrom) if (await registry.mountBlob(l.gzipDigest, from)) return as(l.gzipDigest, l.gzipSize!);
      const kept = await readFile(i.storedBlob(l.gzipDigest)).catch(() => undefined);
      if (kept && sha256(kept) === l.gzipDigest) {
        await upload(l.gzipDigest, kept);
        return as(l.gzipDigest, kept.length);
      }
    }
    const sent = await compressing.run(() => sendLayer(i.graphRoot, l, i.notes, (blob) => upload(blob.digest, blob.gz)));
    uploaded++;
    uploadedBytes += sent.size;
    return as(sent.digest, sent.size);
  };
  try {
    if (i.early) early = await Promise.race([i.early.done(), aborted(signal)]);
    const [layers] = await Promise.all([Promise.all(image.layers.map(blobOf)), upload(image.manifest.config.digest, image.config)]);
    const manifest = { schemaVersion: 2, mediaType: manifestType, config: image.manifest.config, layers };
    // The tag is the one step that cannot be taken back: never after a cancel.
    i.signal.throwIfAborted();
    deadline.throwIfAborted();
    const digest = await registry.putManifest(i.tag, Buffer.from(JSON.stringify(manifest)), manifestType);
    return { digest, uploaded, uploadedBytes, early: earlyUsed };
  } catch (e) {
    if (deadline.aborted && !i.signal.aborted) throw new DirectPushTimedOut(ms, bytes);
    throw e instanceof StoredImageUnreadable ? new DirectPushRefused(e.message) : e;
  }
}

/** Rejects when the signal aborts. */
const aborted = (signal: AbortSignal) =>
  new Promise<never>((_, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });

/** The layer compressed, noted and uploaded; its blob. */
async function sendLayer(graphRoot: string, l: StoredLayer, notes: BlobNotes, upload: (blob: Compressed) => Promise<void>): Promise<BlobNote> {
  const blob = await compressLayer(graphRoot, l);
  await notes.put(l.diffId, { digest: blob.digest, size: blob.gz.length }).catch(() => {});
  await upload(blob);
  return { digest: blob.digest, size: blob.gz.length };
}

/** The layer's tar, put back together from storage, compressed; refused when it is not the tar its diff ID names. */
async function compressLayer(graphRoot: string, l: StoredLayer): Promise<Compressed> {
  const out = createTarCompressor();
  for await (const piece of storedLayerTar(graphRoot, l.id)) {
    out.write(piece);
    await out.ready();
  }
  const blob = await out.finish();
  // podman's push would send these bytes as they are, under a config that names other ones.
  if (blob.diffId !== l.diffId) {
    throw new KilnError("internal", `container storage is damaged: layer ${l.id.slice(0, 12)}'s files are not the tar its image records (its diff ID); nothing was pushed. Reset container storage (the ResetStorage RPC) and build again`);
  }
  return blob;
}

/** The layers of a build sent before its push (createEarlyUploads). */
export interface EarlyUploads {
  /** buildah committed a step that made a layer of the final image: its image's ID, as buildah printed it. */
  committed(imageIdPrefix: string): void;
  /** Once every upload started has ended: the blobs sent, by diff ID (a failed one is left out: the push sends it). */
  done(): Promise<Map<string, BlobNote>>;
  /** Stops what is still under way (the build ended). */
  stop(): void;
}

/**
 * Sends each new layer of the final image while buildah runs the steps after it: compressed
 * from storage as soon as buildah has committed it, and uploaded (a blob no manifest names yet:
 * the push's manifest will). The push then waits for what is under way instead of starting it.
 * Anything that goes wrong here only leaves the layer to the push.
 */
export function createEarlyUploads(i: Pick<DirectPushInput, "graphRoot" | "client" | "notes" | "signal" | "deadlineMs">): EarlyUploads {
  const work: Promise<unknown>[] = [];
  const sent = new Map<string, BlobNote>();
  const stopped = new AbortController();
  const signal = AbortSignal.any([i.signal, stopped.signal]);
  let registry: RegistryClient | undefined;
  // One layer at a time: buildah's later steps share the machine.
  const one = createSlots(1);
  return {
    committed(imageIdPrefix) {
      const w = one.run(async () => {
        const l = await storedTopLayer(i.graphRoot, imageIdPrefix);
        if (!l || l.diffSize > MAX_DIRECT_LAYER_BYTES || sent.has(l.diffId) || signal.aborted) return;
        registry ??= i.client(signal);
        const note = await i.notes.get(l.diffId);
        if (note && (await registry.hasBlob(note.digest))) return;
        const r = registry;
        sent.set(l.diffId, await sendLayer(i.graphRoot, l, i.notes, (blob) => r.putBlob(blob.digest, blob.gz, Math.ceil(i.deadlineMs(blob.gz.length)))));
      });
      w.catch(() => {});
      work.push(w);
    },
    async done() {
      await Promise.allSettled(work);
      return sent;
    },
    stop() {
      stopped.abort();
    },
  };
}
