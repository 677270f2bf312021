// The files that differ between two commits of a project's cache, as git's tree diff lists them:
// repository paths, no rename detection (a rename is a file gone and a file added). The checkout
// asks it whether a .gitattributes changed, the fast path which steps read a change; one diff
// answers both when the checkout held the fast path's base. Collected whole (-z, no line limit):
// a list cut short would hide a change.
import { errorSummary, exec } from "../process/exec.js";

export type ChangedFiles = (from: string, to: string) => Promise<string[]>;

export function changedFiles(gitDir: string, o: { env: Record<string, string>; signal?: AbortSignal }): ChangedFiles {
  return async (from, to) => {
    const r = await exec("git", ["--git-dir", gitDir, "diff-tree", "-r", "--no-renames", "--name-only", "-z", from, to], { env: o.env, timeoutMs: 30_000, ...(o.signal ? { signal: o.signal } : {}) });
    o.signal?.throwIfAborted();
    if (r.exitCode !== 0) throw new Error(`git diff-tree ${from.slice(0, 12)} ${to.slice(0, 12)} failed: ${errorSummary(r)}`);
    return r.stdout.split("\0").filter(Boolean);
  };
}
