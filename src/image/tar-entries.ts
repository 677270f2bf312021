// Reading an image layer: its tar entries, in order, with each file's content digest.
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gunzip as gunzipCb } from "node:zlib";
import tar from "tar-stream";

const gunzip = promisify(gunzipCb);

export interface TarEntry {
  /** The path without a leading "./" or "/" and without a trailing "/". */
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname?: string;
  /** sha256 of a regular file's content. */
  digest?: string;
}

export const normalizeTarPath = (name: string) => name.replace(/^(\.\/|\/)+/, "").replace(/\/+$/, "");

/** The entries of a layer blob (gzip'd or plain tar). */
export async function readLayer(blob: Buffer): Promise<TarEntry[]> {
  const isGzip = blob[0] === 0x1f && blob[1] === 0x8b;
  const plain = isGzip ? await gunzip(blob) : blob;
  const out: TarEntry[] = [];
  const extract = tar.extract();
  Readable.from([plain]).pipe(extract);
  for await (const entry of extract) {
    const h = entry.header;
    const hash = createHash("sha256");
    for await (const chunk of entry) hash.update(chunk as Buffer);
    out.push({
      path: normalizeTarPath(h.name),
      type: h.type ?? "file",
      mode: (h.mode ?? 0) & 0o7777,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      size: h.size ?? 0,
      mtime: h.mtime?.getTime() ?? 0,
      ...(h.linkname ? { linkname: h.linkname } : {}),
      ...(h.type === "file" || h.type === "contiguous-file" ? { digest: `sha256:${hash.digest("hex")}` } : {}),
    });
  }
  return out;
}
