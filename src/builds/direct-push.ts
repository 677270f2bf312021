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
import { createTarCompressor } from "../image/layer-gzip.js";
import { readStoredImage, storedLayerTar, StoredImageUnreadable, type StoredLayer } from "../podman/stored-image.js";
import type { BlobNotes } from "../registry/blob-notes.js";
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
  /** From here on the tag may be the registry's: a cancel waits. */
  onCommit?(): void;
}

export interface DirectPushResult {
  digest: string;
  /** Layers compressed and uploaded by this push, and their bytes (compressed). */
  uploaded: number;
  uploadedBytes: number;
}

/** Layers compressed at once (each uses every core for its pieces). */
const LAYERS_AT_ONCE = 2;
/** A larger layer goes up with podman: kiln holds a layer's blob in memory while it uploads it. */
export const MAX_DIRECT_LAYER_BYTES = 2 * 1024 ** 3;

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
  const registry = i.client(AbortSignal.any([i.signal, deadline]));
  const upload = (digest: string, blob: Buffer) => registry.putBlob(digest, blob, ms);
  const compressing = createSlots(LAYERS_AT_ONCE);
  let uploaded = 0;
  let uploadedBytes = 0;
  const blobOf = async (l: StoredLayer): Promise<Descriptor> => {
    const as = (digest: string, size: number): Descriptor => ({ mediaType: layerType, digest, size });
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
    const blob = await compressing.run(() => compressLayer(i.graphRoot, l));
    await i.notes.put(l.diffId, { digest: blob.digest, size: blob.gz.length }).catch(() => {});
    await upload(blob.digest, blob.gz);
    uploaded++;
    uploadedBytes += blob.gz.length;
    return as(blob.digest, blob.gz.length);
  };
  try {
    const [layers] = await Promise.all([Promise.all(image.layers.map(blobOf)), upload(image.manifest.config.digest, image.config)]);
    const manifest = { schemaVersion: 2, mediaType: manifestType, config: image.manifest.config, layers };
    // The tag is the one step that cannot be taken back: never after a cancel.
    i.signal.throwIfAborted();
    deadline.throwIfAborted();
    i.onCommit?.();
    const digest = await registry.putManifest(i.tag, Buffer.from(JSON.stringify(manifest)), manifestType);
    return { digest, uploaded, uploadedBytes };
  } catch (e) {
    if (deadline.aborted && !i.signal.aborted) throw new DirectPushTimedOut(ms, bytes);
    throw e instanceof StoredImageUnreadable ? new DirectPushRefused(e.message) : e;
  }
}

/** The layer's tar, put back together from storage, compressed; refused when it is not the tar its diff ID names. */
async function compressLayer(graphRoot: string, l: StoredLayer) {
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
