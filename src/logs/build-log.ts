// One build's log: append-only numbered lines, written to the volume and fanned out to readers.
// Readers pull at their own pace from the shared list, each with its own cursor, so a stalled
// reader holds nothing up: the build never waits for anyone, and no per-reader queue grows.
// A line is written to the file before any reader sees it, so a line someone has seen survives
// a kill -9 of kilnd (a small synchronous append per line; lines come at the pace of a build).
import { closeSync, openSync, writeSync } from "node:fs";
import { LogStream, Phase } from "../gen/kiln/v1/builder_pb.js";

export interface LogEntry {
  seq: number;
  /** ms since the epoch */
  time: number;
  text: string;
  stream: LogStream;
  phase: Phase;
}

export class BuildLog {
  private readonly entries: LogEntry[] = [];
  private closed = false;
  private wake: (() => void) | undefined;
  private next: Promise<void>;
  private fd: number | undefined;

  /** mask is applied to every line before it is stored or anyone sees it (secrets become ***). */
  constructor(
    readonly path: string,
    private readonly mask: (text: string) => string = (t) => t,
  ) {
    this.fd = openSync(path, "a", 0o600);
    this.next = new Promise((res) => (this.wake = res));
  }

  get lastSeq(): number {
    return this.entries.length;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  append(text: string, stream: LogStream, phase: Phase): LogEntry | undefined {
    if (this.closed) return undefined;
    const entry: LogEntry = { seq: this.entries.length + 1, time: Date.now(), text: this.mask(text), stream, phase };
    this.entries.push(entry);
    if (this.fd !== undefined) {
      try {
        writeSync(this.fd, `${JSON.stringify(encode(entry))}\n`);
      } catch {
        // A full disk must not stop the build: the line stays in memory for live readers.
      }
    }
    this.notify();
    return entry;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.notify();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Lines after afterSeq; with follow, waits for new ones until the log closes or signal aborts. */
  async *read(afterSeq: number, follow: boolean, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    let i = Math.max(0, Math.min(afterSeq, Number.MAX_SAFE_INTEGER));
    for (;;) {
      while (i < this.entries.length) yield this.entries[i++]!;
      if (!follow || this.closed || signal?.aborted) return;
      await this.changed(signal);
    }
  }

  private notify() {
    const wake = this.wake;
    this.next = new Promise((res) => (this.wake = res));
    wake?.();
  }

  private changed(signal?: AbortSignal): Promise<void> {
    if (!signal) return this.next;
    return new Promise((res) => {
      const done = () => {
        signal.removeEventListener("abort", done);
        res();
      };
      signal.addEventListener("abort", done, { once: true });
      void this.next.then(done);
    });
  }
}

// On disk, one JSON object a line with short keys: logs of big builds stay small.
interface StoredEntry {
  s: number;
  t: number;
  o: number;
  p: number;
  x: string;
}

const encode = (e: LogEntry): StoredEntry => ({ s: e.seq, t: e.time, o: e.stream, p: e.phase, x: e.text });

export const decodeEntry = (line: string): LogEntry | undefined => {
  try {
    const v = JSON.parse(line) as StoredEntry;
    if (typeof v.s !== "number" || typeof v.x !== "string") return undefined;
    return { seq: v.s, time: v.t, text: v.x, stream: v.o as LogStream, phase: v.p as Phase };
  } catch {
    return undefined; // a torn last line after a crash
  }
};
