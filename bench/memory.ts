// kilnd's memory and its log fan-out under load: resident memory idle and during a build
// followed by 100 live log subscribers (each must receive every line), and how much slower a
// build gets when a subscriber stops reading (it must not: the log is pulled, not pushed).
import { readFileSync } from "node:fs";
import { stalledLogReader } from "./lib/stalled-reader.js";
import type { KilnEngine } from "./engines/kiln.js";
import type { BenchApp } from "./engines/engine.js";

/** Resident set size of a process, in MiB. */
export function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) / 1024;
}

/** Peak RSS (MiB) while the build runs with n subscribers following its log from the start. */
export async function rssWithSubscribers(k: KilnEngine, app: BenchApp, commit: string, n: number): Promise<{ peakMiB: number; lines: number }> {
  const pid = k.pid()!;
  let peak = rssMiB(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 5);
  try {
    const id = await k.start(app, commit);
    const counts = await Promise.all(
      Array.from({ length: n }, async () => {
        let lines = 0;
        for await (const m of k.client.streamLogs({ buildId: id, follow: true })) if (m.event.case === "line") lines++;
        return lines;
      }),
    );
    await k.finish(id);
    const all = new Set(counts);
    if (all.size !== 1) throw new Error(`subscribers saw different line counts: ${[...all].join(", ")}`);
    return { peakMiB: peak, lines: counts[0]! };
  } finally {
    clearInterval(sampler);
  }
}

/** One build timed from Build to its final state, with `stalled` subscribers that never read. */
export async function buildWithStalled(k: KilnEngine, app: BenchApp, commit: string, stalled: number): Promise<number> {
  const t0 = performance.now();
  const id = await k.start(app, commit);
  const sockets = Array.from({ length: stalled }, () => stalledLogReader(k.port, id));
  try {
    await k.finish(id);
    return performance.now() - t0;
  } finally {
    for (const s of sockets) s.destroy();
  }
}
