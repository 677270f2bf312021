// How long the bench's volume takes to create a file, right now, in a new directory of the
// bench's work directory. On these VMs it moves from 20 to over 900 µs per empty file within
// minutes of the bench's own work. Session 25 found why: the volume is ext4 without a journal,
// where a new inode is not taken from those freed in the last minute, and every creation scans
// its group's freed ones (fs/ext4/ialloc.c, recently_deleted; perf showed the time there). So this
// probe reads how many files were deleted near the bench's work directory in the last minute
// (the resets'), not the disk's speed; kilnd places its large new trees away from them
// (src/storage/spread-dirs.ts), the other engines do not.
import { closeSync, mkdirSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";

/** Microseconds per empty file created in a fresh directory under dir (median of three rounds of n). */
export function fileCreateMicros(dir: string, n = 300): number {
  const rounds: number[] = [];
  for (let r = 0; r < 3; r++) {
    const probe = join(dir, `fs-probe-${process.pid}-${r}`);
    rmSync(probe, { recursive: true, force: true });
    mkdirSync(probe, { recursive: true });
    const t0 = performance.now();
    for (let i = 0; i < n; i++) closeSync(openSync(join(probe, `f${i}`), "w", 0o644));
    rounds.push(((performance.now() - t0) * 1000) / n);
    rmSync(probe, { recursive: true, force: true });
  }
  return rounds.sort((a, b) => a - b)[1]!;
}
