// Slots: at most max holders at once; the rest wait in order, and a wait ends early when its
// signal aborts. Build slots (at most max builds run podman at once), the base layer store's
// unpackers, the fast path's gzip pieces.
export interface Slots {
  acquire(signal?: AbortSignal): Promise<() => void>;
  /** Runs fn in a slot, released when it settles. */
  run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  readonly running: number;
  readonly waiting: number;
}

export function createSlots(max: number): Slots {
  let running = 0;
  const queue: Array<{ grant: () => void }> = [];

  const release = () => {
    running--;
    const next = queue.shift();
    if (next) next.grant();
  };

  const slots: Slots = {
    async run(fn, signal) {
      const done = await slots.acquire(signal);
      try {
        return await fn();
      } finally {
        done();
      }
    },
    get running() {
      return running;
    },
    get waiting() {
      return queue.length;
    },
    acquire(signal) {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        let released = false;
        const once = () => {
          if (released) return;
          released = true;
          release();
        };
        if (running < max) {
          running++;
          return resolve(once);
        }
        const entry = {
          grant: () => {
            signal?.removeEventListener("abort", onAbort);
            running++;
            resolve(once);
          },
        };
        const onAbort = () => {
          const i = queue.indexOf(entry);
          if (i >= 0) queue.splice(i, 1);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        queue.push(entry);
      });
    },
  };
  return slots;
}
