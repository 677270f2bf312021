// What kiln's push made of a layer: the gzip blob of the layer's tar (by its diff ID), so that the
// next push of the same layer asks the registry for that blob instead of compressing it again
// (containers/image keeps the same knowledge in its blob-info cache, off the volume). A note
// only saves work: the registry is asked whether it has the blob every time, and a layer
// compressed again gives the same blob (image/layer-gzip.ts). The notes live in container
// storage's directory, so a reset of storage takes them along.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { storedLayerRecords } from "../podman/stored-image.js";
import { writeFileAtomic } from "../util/fs-atomic.js";

export interface BlobNote {
  digest: string;
  size: number;
}

export interface BlobNotes {
  get(diffId: string): Promise<BlobNote | undefined>;
  put(diffId: string, note: BlobNote): Promise<void>;
}

/** The notes' directory in container storage's graph root. */
export const BLOB_NOTES_DIR = "kiln-blob-notes";

const DIGEST = /^sha256:([0-9a-f]{64})$/;

export function createBlobNotes(dir: string): BlobNotes {
  const file = (diffId: string) => {
    const m = DIGEST.exec(diffId);
    return m ? join(dir, m[1]!) : undefined;
  };
  return {
    async get(diffId) {
      const f = file(diffId);
      if (!f) return undefined;
      const text = await readFile(f, "utf8").catch(() => undefined);
      if (!text) return undefined;
      try {
        const n = JSON.parse(text) as Partial<BlobNote>;
        return typeof n.digest === "string" && DIGEST.test(n.digest) && Number.isSafeInteger(n.size) ? { digest: n.digest, size: n.size! } : undefined;
      } catch {
        return undefined;
      }
    },
    async put(diffId, note) {
      const f = file(diffId);
      if (!f) return;
      await mkdir(dir, { recursive: true });
      await writeFileAtomic(f, JSON.stringify(note));
    },
  };
}

/**
 * Removes the notes of layers container storage no longer has (after a prune removed images):
 * kiln only ever pushes layers storage has. How many went.
 */
export async function collectBlobNotes(dir: string, graphRoot: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.length === 0) return 0;
  const records = await storedLayerRecords(graphRoot);
  const held = new Set(records.map((r) => r["diff-digest"]?.replace(/^sha256:/, "")));
  const gone = names.filter((n) => /^[0-9a-f]{64}$/.test(n) && !held.has(n));
  await Promise.all(gone.map((n) => rm(join(dir, n), { force: true })));
  return gone.length;
}
