// A layer's tar into its blob: the tar hashed as it comes (its diff ID), and each GZIP_PIECE of it
// compressed on the thread pool while the caller produces the rest. A tar of one piece or less
// is one gzip member; a longer one, one member per piece (RFC 1952 allows several; Go's,
// containerd's and podman's readers read them all). The same tar gives the same blob every time.
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { promisify } from "node:util";
import { constants as zlibConstants, deflateRawSync, gzip as gzipCb, type ZlibOptions } from "node:zlib";
import { createSlots } from "../util/slots.js";

const gzip = promisify(gzipCb) as (data: Buffer, options?: ZlibOptions) => Promise<Buffer>;

const GZIP_PIECE = 4 * 1024 * 1024;
const SAMPLE = 64 * 1024;

export interface Compressed {
  gz: Buffer;
  /** sha256 of the tar. */
  diffId: string;
  /** sha256 of the blob. */
  digest: string;
}

export interface TarCompressor {
  /** The next bytes of the tar (kept until compressed: not to be reused by the caller). */
  write(chunk: Buffer): void;
  /** The blob, once every piece is compressed. Nothing may be written after. */
  finish(): Promise<Compressed>;
  /** Resolves once few enough pieces wait for compression: a caller that writes faster than they compress awaits it. */
  ready(): Promise<void>;
  /** Bytes of tar written so far. */
  readonly size: number;
}

export function createTarCompressor(): TarCompressor {
  const plainHash = createHash("sha256");
  const pieces: Promise<Buffer>[] = [];
  // Not more pieces in flight than there are cores: the thread pool is shared with file reads.
  const width = Math.max(1, availableParallelism());
  const inFlight = createSlots(width);
  let held: Buffer[] = [];
  let heldBytes = 0;
  let total = 0;
  let finished = false;
  const compressPiece = (piece: Buffer): Promise<Buffer> => inFlight.run(() => gzip(piece, { level: levelFor(piece) }));
  const cut = (): void => {
    const all = held.length === 1 ? held[0]! : Buffer.concat(held);
    let at = 0;
    for (; all.length - at >= GZIP_PIECE; at += GZIP_PIECE) {
      const gz = compressPiece(all.subarray(at, at + GZIP_PIECE));
      gz.catch(() => {});
      pieces.push(gz);
    }
    held = at < all.length ? [all.subarray(at)] : [];
    heldBytes = all.length - at;
  };
  return {
    get size() {
      return total;
    },
    async ready() {
      // Pieces are compressed in order (the slots are first come, first served).
      const waitFor = pieces.length - 2 * width - 1;
      if (waitFor >= 0) await pieces[waitFor];
    },
    write(chunk) {
      if (finished) throw new Error("the layer is finished");
      plainHash.update(chunk);
      total += chunk.length;
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes >= 2 * GZIP_PIECE) cut();
    },
    async finish() {
      finished = true;
      if (total > GZIP_PIECE) {
        cut();
        if (heldBytes > 0) pieces.push(compressPiece(held[0]!));
      } else {
        const plain = Buffer.concat(held);
        pieces.push(gzip(plain, { level: levelFor(plain) }));
      }
      const gz = Buffer.concat(await Promise.all(pieces));
      return { gz, diffId: `sha256:${plainHash.digest("hex")}`, digest: `sha256:${createHash("sha256").update(gz).digest("hex")}` };
    },
  };
}

/** A piece that does not compress (already compressed files) is stored: deflating it costs time for nothing. */
function levelFor(piece: Buffer): number {
  if (piece.length < 4 * SAMPLE) return zlibConstants.Z_DEFAULT_COMPRESSION;
  const sample = piece.subarray(0, SAMPLE);
  return deflateRawSync(sample, { level: 1 }).length > sample.length * 0.9 ? zlibConstants.Z_NO_COMPRESSION : zlibConstants.Z_DEFAULT_COMPRESSION;
}
