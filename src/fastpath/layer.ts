// The final COPY's layer, made by kiln from the checkout: what `COPY <sources> <dest>` writes on
// top of an unchanged image, as buildah writes it. The directories on the way to the
// destination come from the last full build's layer (they belong to the image below, which is
// the same); everything under the destination comes from the context: modes and times as on
// disk, owner root or the --chown owner, .containerignore honoured, symlinks kept as symlinks.
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { lstat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { basename, join, posix } from "node:path";
import { promisify } from "node:util";
import { constants as zlibConstants, deflateRawSync, gzip as gzipCb, type ZlibOptions } from "node:zlib";
import tar from "tar-stream";
import type { TarEntry } from "../image/tar-entries.js";
import { sha256 } from "../registry/client.js";
import { FastPathRefused } from "./refused.js";

const gzip = promisify(gzipCb) as (data: Buffer, options?: ZlibOptions) => Promise<Buffer>;

// Files are read with the synchronous calls: a promise per lstat and read costs about 130 µs
// in the thread pool against 15 µs inline (10,000 small files: 2.7 s against 0.17 s). The event
// loop gets its turn every YIELD_EVERY files, so kilnd answers RPCs meanwhile.
const YIELD_EVERY = 256;
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));
// The layer is compressed in pieces of this size at once, on the thread pool, as members of one
// gzip stream (RFC 1952 allows several; Go's, containerd's and podman's readers read them all).
const GZIP_PIECE = 4 * 1024 * 1024;

export interface LayerInput {
  contextDir: string;
  sources: string[];
  /** Absolute destination in the image; ends with "/" when written so. */
  dest: string;
  /** The files' owner, or "preserve" (a COPY --from keeps the stage's owners). */
  owner: { uid: number; gid: number } | "preserve";
  /** Directories on the way to the destination, as the last full build's layer has them. */
  ancestors: TarEntry[];
  /** One file to a destination without "/": how the last full build wrote it (base.ts). */
  fileDest?: "file" | "into-dir";
  ignored(path: string): boolean;
  /** Refuses layers whose files add up to more than this. */
  maxBytes: number;
}

export interface Layer {
  gz: Buffer;
  /** What it holds, in order (bodies included): kiln writes them out to run the steps after it. */
  entries: LayerEntry[];
  diffId: string;
  digest: string;
  files: number;
  bytes: number;
}

type Header = tar.Headers;
export interface LayerEntry {
  header: Header;
  body?: Buffer;
}

export async function makeLayer(input: LayerInput): Promise<Layer> {
  const entries: LayerEntry[] = [];
  let bytes = 0;
  const rel = (p: string) => p.replace(/^\/+/, "");

  for (const a of input.ancestors) {
    entries.push({ header: { name: `${a.path}/`, type: "directory", mode: a.mode, uid: a.uid, gid: a.gid, mtime: new Date(a.mtime) } });
  }

  let seen = 0;
  const add = async (ctxPath: string, target: string): Promise<void> => {
    if (++seen % YIELD_EVERY === 0) await yieldToLoop();
    const abs = join(input.contextDir, ctxPath);
    const st = lstatSync(abs);
    const owner = input.owner === "preserve" ? { uid: st.uid, gid: st.gid } : input.owner;
    const common = { name: rel(target), mode: st.mode & 0o7777, uid: owner.uid, gid: owner.gid, mtime: st.mtime };
    if (st.isSymbolicLink()) {
      entries.push({ header: { ...common, type: "symlink", linkname: readlinkSync(abs) } });
    } else if (st.isFile()) {
      bytes += st.size;
      if (bytes > input.maxBytes) throw new FastPathRefused(`the final COPY's files are over ${input.maxBytes} bytes`);
      entries.push({ header: { ...common, type: "file", size: st.size }, body: readFileSync(abs) });
    } else if (st.isDirectory()) {
      entries.push({ header: { ...common, name: `${rel(target)}/`, type: "directory" } });
      await addChildren(ctxPath, target);
    } else {
      throw new FastPathRefused(`${ctxPath} is neither a file, a directory nor a symlink`);
    }
  };
  const addChildren = async (ctxDir: string, targetDir: string): Promise<void> => {
    const names = readdirSync(join(input.contextDir, ctxDir)).sort();
    for (const name of names) {
      const ctxPath = ctxDir === "" ? name : `${ctxDir}/${name}`;
      if (input.ignored(ctxPath)) continue;
      await add(ctxPath, posix.join(targetDir, name));
    }
  };

  const intoDir = input.dest.endsWith("/") || input.sources.length > 1;
  for (const source of input.sources) {
    if (source !== "" && input.ignored(source)) throw new FastPathRefused(`the final COPY names ${source}, which .containerignore excludes`);
    let st;
    try {
      st = await lstat(join(input.contextDir, source));
    } catch {
      throw new FastPathRefused(`the final COPY's source ${source || "."} is not in the commit`);
    }
    // buildah resolves a source that is a symlink; kiln's layer would hold the link itself.
    if (st.isSymbolicLink()) throw new FastPathRefused(`the final COPY's source ${source} is a symlink`);
    if (st.isDirectory()) {
      if (input.fileDest) throw new FastPathRefused(`the final COPY's source ${source} was a file in the last full build and is a directory now`);
      await addChildren(source, input.dest);
    } else if (intoDir || input.fileDest === "into-dir") {
      await add(source, posix.join(input.dest, basename(source)));
    } else if (input.fileDest === "file") {
      await add(source, input.dest);
    } else {
      throw new FastPathRefused(`the final COPY's source ${source} was a directory in the last full build and is a file now`);
    }
  }

  return { ...(await compress(entries)), entries, files: entries.length, bytes };
}

/** The entries as a layer blob: the tar's digest (diff ID), gzipped, and the blob's digest. */
export async function compress(entries: LayerEntry[]): Promise<{ gz: Buffer; diffId: string; digest: string }> {
  const plain = await pack(entries);
  const gz = await gzipInPieces(plain);
  return { gz, diffId: sha256(plain), digest: sha256(gz) };
}

async function pack(entries: LayerEntry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      p.entry(e.header, e.body ?? undefined, (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/**
 * One gzip member per piece, compressed side by side on the thread pool; one member when small.
 * A piece that does not compress (media, archives, random bytes: a sample of it shrinks by less
 * than a tenth) is stored in its member as it is, which costs no time and a few bytes.
 */
async function gzipInPieces(plain: Buffer): Promise<Buffer> {
  if (plain.length <= GZIP_PIECE) return gzip(plain, { level: levelFor(plain) });
  const pieces: Buffer[] = [];
  for (let at = 0; at < plain.length; at += GZIP_PIECE) pieces.push(plain.subarray(at, at + GZIP_PIECE));
  // No more at once than there are cores: the thread pool is shared with file reads.
  const width = Math.max(1, availableParallelism());
  const out: Buffer[] = new Array(pieces.length);
  for (let i = 0; i < pieces.length; i += width) {
    const batch = pieces.slice(i, i + width);
    (await Promise.all(batch.map((p) => gzip(p, { level: levelFor(p) })))).forEach((g, j) => (out[i + j] = g));
  }
  return Buffer.concat(out);
}

const SAMPLE = 64 * 1024;

function levelFor(piece: Buffer): number {
  if (piece.length < 4 * SAMPLE) return zlibConstants.Z_DEFAULT_COMPRESSION;
  const sample = piece.subarray(0, SAMPLE);
  return deflateRawSync(sample, { level: 1 }).length > sample.length * 0.9 ? zlibConstants.Z_NO_COMPRESSION : zlibConstants.Z_DEFAULT_COMPRESSION;
}
