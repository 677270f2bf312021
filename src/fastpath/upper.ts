// Layers and directories, both ways, for the steps kiln runs itself: a layer's entries written
// out as an overlay upper directory (the final COPY's, for the RUN steps above it), and an upper
// directory a RUN step wrote read back as its layer, the way containers-storage diffs an overlay
// layer: overlay's whiteouts (0/0 character devices) become ".wh.<name>" files, an opaque
// directory (trusted.overlay.opaque) gets ".wh..wh..opq", files linked to each other stay
// hard links. Anything a layer of kiln's could not carry as buildah does (extended attributes,
// devices, sockets, an overlay redirect) is a refusal: the full build runs.
import { chownSync, chmodSync, lchownSync, lstatSync, lutimesSync, mkdirSync, readFileSync, readdirSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "../image/whiteouts.js";
import { exec } from "../process/exec.js";
import type { LayerEntry } from "./layer.js";
import { FastPathRefused } from "./refused.js";

const YIELD_EVERY = 256;
// A file entry needs a body, even an empty one (tar-stream waits for it otherwise).
const EMPTY = Buffer.alloc(0);
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

/** Writes a layer's entries under dir (owners, modes and times as the headers say). */
export async function writeEntries(dir: string, entries: readonly LayerEntry[]): Promise<void> {
  const dirTimes: [string, Date][] = [];
  let n = 0;
  for (const { header: h, body } of entries) {
    if (++n % YIELD_EVERY === 0) await yieldToLoop();
    const path = join(dir, h.name.replace(/\/+$/, ""));
    const mode = (h.mode ?? 0o644) & 0o7777;
    const mtime = h.mtime ?? new Date();
    if (h.type === "directory") {
      mkdirSync(path, { recursive: true });
      chownSync(path, h.uid ?? 0, h.gid ?? 0);
      chmodSync(path, mode);
      dirTimes.push([path, mtime]);
    } else if (h.type === "symlink") {
      symlinkSync(h.linkname ?? "", path);
      lchownSync(path, h.uid ?? 0, h.gid ?? 0);
      lutimesSync(path, mtime, mtime);
    } else if (h.type === "file") {
      writeFileSync(path, body ?? Buffer.alloc(0));
      // chown first: it clears set-user-ID and set-group-ID bits.
      chownSync(path, h.uid ?? 0, h.gid ?? 0);
      chmodSync(path, mode);
      utimesSync(path, mtime, mtime);
    } else {
      throw new FastPathRefused(`the final COPY's layer has a ${h.type} entry`);
    }
  }
  // Deepest first: writing a child changes its directory's time.
  for (const [path, mtime] of dirTimes.reverse()) utimesSync(path, mtime, mtime);
}

export interface UpperLayer {
  entries: LayerEntry[];
  bytes: number;
}

/**
 * An upper directory a RUN step wrote, as its layer's entries, each also given to sink as soon as
 * it is known where it goes (a directory's opaque marker comes right after it, and getfattr,
 * which reads the markers, runs beside the walk: entries wait for it at first).
 */
export async function readUpper(upper: string, env: Record<string, string>, maxBytes: number, signal: AbortSignal, sink: (e: LayerEntry) => void = () => {}): Promise<UpperLayer> {
  const reading = opaqueDirs(upper, env, signal);
  let opaque: Set<string> | undefined;
  reading.then((s) => (opaque = s)).catch(() => {});
  const walked: LayerEntry[] = [];
  const out: LayerEntry[] = [];
  let fed = 0;
  const emit = (e: LayerEntry) => {
    out.push(e);
    sink(e);
  };
  const feed = () => {
    if (!opaque) return;
    for (; fed < walked.length; fed++) {
      const e = walked[fed]!;
      emit(e);
      const dir = e.header.type === "directory" ? e.header.name.slice(0, -1) : undefined;
      if (dir !== undefined && opaque.has(dir)) emit({ header: { name: `${dir}/${OPAQUE_WHITEOUT}`, type: "file", size: 0, mode: 0, uid: 0, gid: 0, mtime: e.header.mtime }, body: EMPTY });
    }
  };
  const linked = new Map<number, string>();
  let bytes = 0;
  let n = 0;
  const walk = async (rel: string): Promise<void> => {
    for (const name of readdirSync(join(upper, rel)).sort()) {
      if (++n % YIELD_EVERY === 0) {
        feed();
        await yieldToLoop();
      }
      const path = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(join(upper, path));
      const common = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
      if (st.isCharacterDevice() && st.rdev === 0) {
        const whiteout = rel === "" ? `${WHITEOUT_PREFIX}${name}` : `${rel}/${WHITEOUT_PREFIX}${name}`;
        walked.push({ header: { name: whiteout, type: "file", size: 0, mode: 0, uid: 0, gid: 0, mtime: st.mtime }, body: EMPTY });
      } else if (st.isDirectory()) {
        walked.push({ header: { ...common, name: `${path}/`, type: "directory" } });
        await walk(path);
      } else if (st.isSymbolicLink()) {
        walked.push({ header: { ...common, name: path, type: "symlink", linkname: readlinkSync(join(upper, path)) } });
      } else if (st.isFile()) {
        const first = st.nlink > 1 ? linked.get(st.ino) : undefined;
        if (first !== undefined) {
          walked.push({ header: { ...common, name: path, type: "link", linkname: first } });
          continue;
        }
        if (st.nlink > 1) linked.set(st.ino, path);
        bytes += st.size;
        if (bytes > maxBytes) throw new FastPathRefused(`a RUN step wrote over ${maxBytes} bytes`);
        walked.push({ header: { ...common, name: path, type: "file", size: st.size }, body: readFileSync(join(upper, path)) });
      } else {
        throw new FastPathRefused(`a RUN step left ${path}, which is neither a file, a directory nor a symlink`);
      }
    }
  };
  await walk("");
  opaque = await reading;
  feed();
  return { entries: out, bytes };
}

/**
 * The upper directory's opaque directories (relative paths). Every other extended attribute is a
 * refusal: overlay's own bookkeeping (impure, origin, uuid) aside, kiln's layers carry none.
 */
async function opaqueDirs(upper: string, env: Record<string, string>, signal: AbortSignal): Promise<Set<string>> {
  const r = await exec("getfattr", ["--recursive", "--physical", "--dump", "--match=-", "--absolute-names", "--encoding=text", upper], { env, timeoutMs: 60_000, signal });
  if (r.exitCode !== 0) throw new FastPathRefused(`getfattr failed on a RUN step's layer: ${r.stderr.trim().split("\n").at(-1) ?? ""}`);
  const opaque = new Set<string>();
  let file = "";
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("# file: ")) {
      file = unescape(line.slice("# file: ".length));
      continue;
    }
    const eq = line.indexOf("=");
    if (!line.trim() || eq < 0) continue;
    const name = line.slice(0, eq);
    const rel = file === upper ? "" : file.startsWith(`${upper}/`) ? file.slice(upper.length + 1) : file;
    if (name === "trusted.overlay.opaque") {
      if (line.slice(eq + 1) === '"y"' && rel !== "") opaque.add(rel);
    } else if (name === "trusted.overlay.redirect" || name === "trusted.overlay.metacopy") {
      throw new FastPathRefused(`overlay left ${name} on ${rel} (kiln mounts with redirect_dir and metacopy off)`);
    } else if (!name.startsWith("trusted.overlay.")) {
      throw new FastPathRefused(`a RUN step set the extended attribute ${name} on ${rel}`);
    }
  }
  return opaque;
}

/** getfattr writes a path's unusual bytes as \ooo (octal). */
function unescape(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const m = text[i] === "\\" ? /^[0-7]{3}/.exec(text.slice(i + 1)) : null;
    if (m) {
      bytes.push(parseInt(m[0], 8));
      i += 3;
    } else {
      bytes.push(...Buffer.from(text[i]!, "utf8"));
    }
  }
  return Buffer.from(bytes).toString("utf8");
}
