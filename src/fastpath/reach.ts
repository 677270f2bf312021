// What an earlier COPY source reads in the checkout, as paths relative to the repository root
// (git diff's paths): the path as written, every symlink met on the way, and the path it
// resolves to. buildah resolves a source inside the context as if the context were the root, so
// a symlink that is absolute or leads out of the context is something kiln cannot follow the
// same way: it refuses. A glob reads everything under its literal directory, and any symlink
// there could be followed: a glob over a directory with symlinks is refused.
import { lstat, readdir, readlink } from "node:fs/promises";
import { posix } from "node:path";

/**
 * written and resolved are paths, or for a glob string prefixes (the literal text before its
 * first wildcard, "src/pack" for src/pack*.json): everything that starts with them may be read.
 */
export type Reads = { ok: true; glob: boolean; written: string; links: string[]; resolved: string } | { ok: false; reason: string };

const GLOB = /[*?[]/;
const MAX_LINKS = 40;
const MAX_GLOB_ENTRIES = 5000;

/** root: the checkout (real path); context: the context, relative to root ("" for the root); source: as the COPY names it. */
export async function readsOf(root: string, context: string, source: string): Promise<Reads> {
  const parts = source.split("/").filter((p) => p !== "" && p !== ".");
  const glob = parts.findIndex((p) => GLOB.test(p));
  const literal = glob < 0 ? parts : parts.slice(0, glob);
  const head = glob < 0 ? "" : parts[glob]!.slice(0, parts[glob]!.search(GLOB));
  const withHead = (dir: string) => (glob < 0 ? dir : dir === "" ? head : `${dir}/${head}`);
  const written = withHead(posix.join(context || ".", ...literal).replace(/^\.$/, ""));
  const links: string[] = [];
  // Resolve component by component, inside the context.
  let cur: string[] = [];
  const queue = [...literal];
  let hops = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "..") {
      if (cur.length === 0) return { ok: false, reason: `${source} leads out of the context` };
      cur.pop();
      continue;
    }
    const rel = posix.join(context || ".", ...cur, c);
    const st = await lstat(posix.join(root, rel)).catch(() => undefined);
    if (!st?.isSymbolicLink()) {
      cur.push(c);
      continue;
    }
    if (++hops > MAX_LINKS) return { ok: false, reason: `${source} resolves through too many symlinks` };
    links.push(rel);
    const target = await readlink(posix.join(root, rel));
    if (target.startsWith("/")) return { ok: false, reason: `${rel} is an absolute symlink (buildah resolves it inside the context)` };
    queue.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
  }
  const dir = posix.join(context || ".", ...cur).replace(/^\.$/, "");
  if (glob >= 0 && (await hasSymlink(posix.join(root, dir || ".")))) return { ok: false, reason: `the glob ${source} covers symlinks` };
  return { ok: true, glob: glob >= 0, written, links, resolved: withHead(dir) };
}

async function hasSymlink(dir: string): Promise<boolean> {
  let seen = 0;
  const walk = async (d: string): Promise<boolean> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (++seen > MAX_GLOB_ENTRIES || e.isSymbolicLink()) return true;
      if (e.isDirectory() && (await walk(posix.join(d, e.name)))) return true;
    }
    return false;
  };
  return walk(dir);
}

/** Whether a changed path (a leaf git reports) and a read path overlap: equal, under, or above it. */
export function overlaps(changed: string, read: string): boolean {
  if (read === "") return true;
  return changed === read || changed.startsWith(`${read}/`) || read.startsWith(`${changed}/`);
}

/** Whether a changed path may be among what a source reads (its path as written, its symlinks, where it resolves). */
export function reaches(changed: string, r: Extract<Reads, { ok: true }>): "written" | "link" | undefined {
  const hit = (x: string) => (r.glob ? changed.startsWith(x) || x.startsWith(`${changed}/`) : overlaps(changed, x));
  if (r.links.some((l) => overlaps(changed, l)) || (r.resolved !== r.written && hit(r.resolved))) return "link";
  return hit(r.written) ? "written" : undefined;
}
