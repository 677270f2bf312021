// Where a secret could end up, searched for it: every file under the given directories (the
// volume: records, logs, git cache, container storage and its layers, the fast path's bases),
// any text (kilnd's output, a log, a record as JSON), and every process's command line.
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";

/**
 * Paths (or "text N") where a needle was found; empty when none. With gunzip, gzip'd files (a
 * registry's layer blobs) are searched unpacked.
 */
export function findLeaks(needles: string[], where: { dirs?: string[]; texts?: Record<string, string>; gunzip?: boolean }): string[] {
  const found: string[] = [];
  const bufs = needles.map((n) => Buffer.from(n));
  const walk = (p: string) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.isSymbolicLink()) {
      const target = readlinkSync(p);
      if (needles.some((n) => target.includes(n))) found.push(`${p} (link)`);
    } else if (st.isDirectory()) {
      let names: string[] = [];
      try {
        names = readdirSync(p);
      } catch {
        return;
      }
      for (const n of names) {
        if (needles.some((x) => n.includes(x))) found.push(`${join(p, n)} (name)`);
        walk(join(p, n));
      }
    } else if (st.isFile()) {
      let data: Buffer;
      try {
        data = readFileSync(p);
      } catch {
        return;
      }
      if (where.gunzip && data[0] === 0x1f && data[1] === 0x8b) {
        try {
          data = gunzipSync(data);
        } catch {
          // not gzip after all: searched as it is
        }
      }
      for (const [i, b] of bufs.entries()) if (data.includes(b)) found.push(`${p} holds needle ${i}`);
    }
  };
  for (const d of where.dirs ?? []) walk(d);
  for (const [name, text] of Object.entries(where.texts ?? {})) {
    for (const [i, n] of needles.entries()) if (text.includes(n)) found.push(`${name} holds needle ${i}`);
  }
  return found;
}

/** Command lines of every process now running that hold a needle. */
export function argvLeaks(needles: string[]): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    let argv: string;
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    for (const [i, n] of needles.entries()) if (argv.includes(n)) found.push(`pid ${pid} (${argv.split("\0")[0]}) argv holds needle ${i}`);
  }
  return found;
}

/** Samples every process's argv until stop() is called; resolves with what it found. */
export function watchArgv(needles: string[], everyMs = 20): { stop(): Promise<string[]>; samples(): number } {
  const found = new Set<string>();
  let n = 0;
  let on = true;
  const loop = (async () => {
    while (on) {
      for (const f of argvLeaks(needles)) found.add(f);
      n++;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      on = false;
      await loop;
      return [...found];
    },
    samples: () => n,
  };
}
