// The final COPY's layer, made by kiln from the checkout: what `COPY <sources> <dest>` writes on
// top of an unchanged image, as buildah writes it. The directories on the way to the
// destination come from the last full build's layer (they belong to the image below, which is
// the same); everything under the destination comes from the context: modes and times as on
// disk, owner root or the --chown owner, .containerignore honoured, symlinks kept as symlinks.
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { lstat } from "node:fs/promises";
import { basename, join, posix } from "node:path";
import tar from "tar-stream";
import { createTarCompressor, type Compressed } from "../image/layer-gzip.js";
import type { TarEntry } from "../image/tar-entries.js";
import { FastPathRefused } from "./refused.js";

// Files are read with the synchronous calls: a promise per lstat and read costs about 130 µs
// in the thread pool against 15 µs inline (10,000 small files: 2.7 s against 0.17 s). The event
// loop gets its turn every YIELD_EVERY files, so kilnd answers RPCs meanwhile.
const YIELD_EVERY = 256;
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

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
  /** What it holds, in order (a COPY's with their bodies: kiln writes them out to run the steps after it; a RUN's, headers only). */
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
export async function compress(entries: readonly LayerEntry[]): Promise<Compressed> {
  const writer = createLayerWriter();
  for (const e of entries) writer.add(e);
  return writer.finish();
}

export type { Compressed };

export interface LayerWriter {
  /** Appends an entry to the layer (its header and body are taken as they are). */
  add(entry: LayerEntry): void;
  /** The layer, once every piece is compressed. Nothing may be added after. */
  finish(): Promise<Compressed>;
}

/**
 * A layer written as its entries come: tar-stream packs them and the tar compressor
 * (image/layer-gzip.ts) hashes and compresses the tar as it comes out, while the caller reads on
 * (a RUN step's upper directory is read on the main thread). A writer given up on (finish never
 * called) leaves nothing behind but its buffers.
 */
export function createLayerWriter(): LayerWriter {
  const pack = tar.pack();
  const out = createTarCompressor();
  const drained = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) out.write(chunk);
  })();
  drained.catch(() => {});
  let finished = false;
  return {
    add(e) {
      if (finished) throw new Error("the layer is finished");
      pack.entry({ ...e.header }, e.body ?? undefined);
    },
    async finish() {
      finished = true;
      pack.finalize();
      await drained;
      return out.finish();
    },
  };
}
