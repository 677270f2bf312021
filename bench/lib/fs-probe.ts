// How long the bench's volume takes to create a file, right now. On these VMs it was seen to
// move from 25 to over 400 µs per empty file within minutes of the bench's own work (session 22:
// creating and deleting trees made it slower, and touching new memory cost 2-5.5 µs a page), and a
// cold build creates thousands of files (the base image's ~6,700, node_modules): the cold row's
// samples are read beside this probe's.
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
