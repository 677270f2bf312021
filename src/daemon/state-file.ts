// Counters that outlive a kilnd process (resets, idle exits): kilnd exits every time the
// machine sleeps, so a counter kept only in memory would always read zero.
import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../util/fs-atomic.js";

export interface DaemonState {
  resets: number;
  lastResetMs: number;
  idleExits: number;
}

const EMPTY: DaemonState = { resets: 0, lastResetMs: 0, idleExits: 0 };

export async function loadState(path: string): Promise<DaemonState> {
  try {
    return { ...EMPTY, ...(JSON.parse(await readFile(path, "utf8")) as Partial<DaemonState>) };
  } catch {
    return { ...EMPTY };
  }
}

export const saveState = (path: string, s: DaemonState) => writeFileAtomic(path, JSON.stringify(s));
