// What kiln's push made of a layer: the gzip blob of the layer's tar (by its diff ID), so that the
// next push of the same layer asks the registry for that blob instead of compressing it again
// (containers/image keeps the same knowledge in its blob-info cache, off the volume). A note
// only saves work: the registry is asked whether it has the blob every time, and a layer
// compressed again gives the same blob (image/layer-gzip.ts). The notes live in container
// storage's directory, so a reset of storage takes them along.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
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
