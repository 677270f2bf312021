// One base image layer, unpacked by kiln the way containers/storage's overlay driver unpacks it
// (pkg/archive's Unpack with the overlay whiteout format, v1.43): the blob streams from the
// registry into a file (kept: storage hands it out as the layer's raw blob) and, gunzipped, into
// GNU tar as root, which restores owners, modes, times, xattrs, links and devices as the tar
// says. Then what tar cannot know about overlay:
// - a `.wh.NAME` file becomes a 0:0 character device NAME with the whiteout's owner, mode 0;
// - a `.wh..wh..opq` file becomes the trusted.overlay.opaque=y xattr on its directory;
//   the directories these touch get back the mtime tar gave them;
// - the layer's root is not the tar's `./` (storage skips that entry): mode 0555, root's, now.
// test/integration/base-layers.test.ts holds the result to podman's own pull, file by file, on
// the base image and on a layer made of the odd cases. What kiln cannot be sure of (a whiteout
// of a path this same layer has, a member tar refuses) is an UnusualLayer: podman pulls it.
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, chown, lchown, lstat, rm, utimes } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "../image/whiteouts.js";
import { exec, errorSummary } from "../process/exec.js";

export class UnusualLayer extends Error {}

export interface UnpackedLayer {
  /** sha256 of the blob as read. */
  digest: string;
  compressedSize: number;
  /** sha256 of the uncompressed tar: the image config's diff_id. */
  diffId: string;
  diffSize: number;
}

const TAR_MS = 10 * 60_000;
const TOOL_MS = 60_000;

/** A pass-through that hashes and counts what goes by, and (for the blob) writes it to a file. */
function tap(file?: string): { stream: Transform; done: () => { digest: string; size: number } } {
  const hash = createHash("sha256");
  let size = 0;
  const out = file ? createWriteStream(file, { mode: 0o600 }) : undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      if (!out || out.write(chunk)) cb(null, chunk);
      else out.once("drain", () => cb(null, chunk));
    },
    flush(cb) {
      if (!out) return cb();
      out.end(() => cb());
      out.once("error", cb);
    },
  });
  out?.on("error", (e) => stream.destroy(e));
  return { stream, done: () => ({ digest: `sha256:${hash.digest("hex")}`, size }) };
}

/**
 * Unpacks a gzipped layer from blob into dir/diff, writing the blob itself to dir/blob. dir/diff
 * must exist and be empty.
 */
export async function unpackLayer(blob: Readable, dir: string, o: { env: Record<string, string>; signal?: AbortSignal }): Promise<UnpackedLayer> {
  const diff = join(dir, "diff");
  const compressed = tap(join(dir, "blob"));
  const uncompressed = tap();
  const gunzip = createGunzip({ chunkSize: 256 * 1024 });
  const tarInput = blob.pipe(compressed.stream).pipe(gunzip).pipe(uncompressed.stream);
  for (const s of [blob, compressed.stream, gunzip]) s.on("error", (e) => tarInput.destroy(e));
  const tar = await exec(
    "tar",
    ["--extract", "--file=-", "--blocking-factor=256", "--read-full-records", `--directory=${diff}`, "--same-owner", "--numeric-owner", "--same-permissions", "--xattrs", "--xattrs-include=*"],
    { env: o.env, timeoutMs: TAR_MS, stdin: tarInput, ...(o.signal ? { signal: o.signal } : {}) },
  );
  if (o.signal?.aborted) throw o.signal.reason ?? new Error("aborted");
  if (tar.exitCode !== 0) throw new UnusualLayer(`tar refused the layer: ${errorSummary(tar)}`);
  const c = compressed.done();
  const u = uncompressed.done();
  await overlayWhiteouts(diff, o.env);
  // containers/storage makes the root itself (0555, owned by root) and skips the tar's `./`.
  await chown(diff, 0, 0);
  await chmod(diff, 0o555);
  const now = new Date();
  await utimes(diff, now, now);
  return { digest: c.digest, compressedSize: c.size, diffId: u.digest, diffSize: u.size };
}

/** The `.wh.` files tar wrote, in overlay's form. */
async function overlayWhiteouts(diff: string, env: Record<string, string>): Promise<void> {
  const found = await exec("find", [diff, "-name", `${WHITEOUT_PREFIX}*`, "-print0"], { env, timeoutMs: TOOL_MS });
  if (found.exitCode !== 0) throw new Error(`find failed in an unpacked layer: ${errorSummary(found)}`);
  const paths = found.stdout.split("\0").filter(Boolean);
  if (paths.length === 0) return;
  // Each touched directory gets back the mtime tar restored (storage sets it after its entries).
  const mtimes = new Map<string, bigint>();
  for (const dir of new Set(paths.map((p) => dirname(p)))) mtimes.set(dir, (await lstat(dir, { bigint: true })).mtimeNs);
  for (const p of paths) {
    const dir = dirname(p);
    const name = basename(p);
    const st = await lstat(p);
    if (!st.isFile()) throw new UnusualLayer(`${p.slice(diff.length)} is a whiteout name but not a file`);
    await rm(p);
    if (name === OPAQUE_WHITEOUT) {
      await tool("setfattr", ["--name=trusted.overlay.opaque", "--value=y", "--", dir], env);
      continue;
    }
    const target = join(dir, name.slice(WHITEOUT_PREFIX.length));
    // The layer has both the path and its whiteout: storage's answer depends on their order in
    // the tar (it fails, or skips), which tar's result no longer tells.
    if (await lstat(target).then(() => true, () => false)) throw new UnusualLayer(`${target.slice(diff.length)} is both in the layer and whited out`);
    await tool("mknod", ["--mode=0", "--", target, "c", "0", "0"], env);
    await lchown(target, st.uid, st.gid);
  }
  for (const [dir, mtimeNs] of mtimes) {
    const seconds = mtimeNs / 1_000_000_000n;
    const nanos = (mtimeNs % 1_000_000_000n).toString().padStart(9, "0");
    // touch keeps nanoseconds; Node's utimes takes a double and does not.
    await tool("touch", ["--no-dereference", `--date=@${seconds}.${nanos}`, "--", dir], env);
  }
}

async function tool(file: string, args: string[], env: Record<string, string>): Promise<void> {
  const r = await exec(file, args, { env, timeoutMs: TOOL_MS });
  if (r.exitCode !== 0) throw new Error(`${file} failed in an unpacked layer: ${errorSummary(r)}`);
}
