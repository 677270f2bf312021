// The fast path's questions: does any file that changed since the base commit reach a step
// before the final COPY, or any step at all? Answered from what buildah will read, not from how the Containerfile
// spells it: each earlier COPY source is resolved through the checkout's symlinks (reach.ts),
// paths are compared from the repository root (so a context written "./" or reached through a
// symlink is the same directory), and a change that could alter files git's blob diff does not
// show (.gitattributes: line endings, filters) counts as reaching everything.
import { realpath } from "node:fs/promises";
import { posix, relative, sep } from "node:path";
import { changedFiles } from "../git/diff.js";
import type { Checkout } from "../git/cache.js";
import { readsOf, reaches } from "./reach.js";
import { FastPathRefused } from "./refused.js";

export interface ChangeInput {
  gitDir: string;
  checkout: string;
  contextDir: string;
  commit: string;
  /** What the checkout found changed since the commit it held before. */
  changed?: Checkout["changed"];
  env: Record<string, string>;
  signal: AbortSignal;
}

/** Throws FastPathRefused unless every changed file is reached by the final COPY alone (or by nothing). */
export async function checkChanges(input: ChangeInput, changed: readonly string[], earlier: string[], finalSources: string[], ignored: (contextPath: string) => boolean): Promise<void> {
  const { root, context } = await where(input);
  for (const s of finalSources) {
    const r = await readsOf(root, context, s);
    if (!r.ok) throw new FastPathRefused(`the final COPY: ${r.reason}`);
    if (r.links.length > 0) throw new FastPathRefused(`the final COPY's source ${s} is reached through a symlink (${r.links[0]})`);
  }
  const hit = await firstRead(input, changed, earlier, ignored, "an earlier COPY");
  if (hit) throw new FastPathRefused(`${hit.path} changed, and an earlier COPY (${hit.source || "."}) copies it`);
}

/**
 * The first changed file that one of these context sources reads (as buildah resolves it), or
 * undefined. A change kiln cannot place (.gitattributes, a read through a symlink, a source it
 * cannot resolve) is a refusal, not an answer. what: who reads, for the refusal's message.
 */
export async function firstRead(input: ChangeInput, changed: readonly string[], sources: readonly string[], ignored: (contextPath: string) => boolean, what: string): Promise<{ path: string; source: string } | undefined> {
  const { root, context } = await where(input);
  const reads = [];
  for (const s of new Set(sources)) {
    const r = await readsOf(root, context, s);
    if (!r.ok) throw new FastPathRefused(`${what}: ${r.reason}`);
    reads.push({ source: s, r });
  }
  for (const path of changed) {
    if (posix.basename(path) === ".gitattributes") throw new FastPathRefused(`${path} changed: git may rewrite files whose content did not change`);
    const inContext = context === "" || path.startsWith(`${context}/`);
    const contextPath = inContext ? path.slice(context === "" ? 0 : context.length + 1) : undefined;
    for (const { source, r } of reads) {
      const how = reaches(path, r);
      if (how === "link") throw new FastPathRefused(`${path} changed, and ${what} (${source || "."}) reads it through a symlink`);
      // The ignore file is matched against paths as written in the context.
      if (how === "written" && !(contextPath !== undefined && ignored(contextPath))) return { path: contextPath ?? path, source };
    }
  }
  return undefined;
}

/** The checkout's real path, and the context relative to it. */
async function where(input: ChangeInput): Promise<{ root: string; context: string }> {
  const root = await realpath(input.checkout);
  return { root, context: relative(root, input.contextDir).split(sep).join("/") };
}

/**
 * Files that differ between the base commit and this one, relative to the repository root, and
 * who listed them: the checkout, when it compared the same two commits, else git now.
 */
export async function changedPaths(input: ChangeInput, baseCommit: string): Promise<{ paths: string[]; listedBy: "checkout" | "git" }> {
  if (input.changed?.since === baseCommit) return { paths: input.changed.paths, listedBy: "checkout" };
  try {
    return { paths: await changedFiles(input.gitDir, input)(baseCommit, input.commit), listedBy: "git" };
  } catch (e) {
    input.signal.throwIfAborted();
    throw new FastPathRefused(`the change since the last full build's commit could not be listed: ${(e as Error).message}`);
  }
}

/** The build log's line for a change: how many files, since which commit, who listed them, the first few. */
export function changeLine(baseCommit: string, c: { paths: readonly string[]; listedBy: "checkout" | "git" }, shown = 5): string {
  const n = c.paths.length;
  const by = c.listedBy === "checkout" ? "the checkout's list" : "git diff-tree";
  if (n === 0) return `fast path: no file changed since ${baseCommit.slice(0, 12)} (${by})`;
  const names = c.paths.slice(0, shown).join(", ") + (n > shown ? `, and ${n - shown} more` : "");
  return `fast path: ${n} file${n === 1 ? "" : "s"} changed since ${baseCommit.slice(0, 12)} (${by}): ${names}`;
}
