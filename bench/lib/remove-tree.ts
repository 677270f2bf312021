// Removing a tree that container storage used: it leaves overlay mounts under a data directory,
// which must be unmounted (deepest first) before it can be deleted. The bench and the tests both.
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";

/** Unmounts everything mounted at or below dir, deepest first. */
export function unmountBelow(dir: string): void {
  const mounts = readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort()
    .reverse();
  for (const m of mounts) {
    try {
      execFileSync("umount", ["-l", m]);
    } catch {
      // already gone
    }
  }
}

export function removeTree(dir: string): void {
  unmountBelow(dir);
  rmSync(dir, { recursive: true, force: true });
}
