// Idle exit: the machine sleeps when kilnd has had nothing to do for --idle-timeout seconds: no
// build running or queued, no RPC in flight, no log stream open. Health checks and metric
// scrapes do not count as work, or a machine with a health check would never sleep.
import type { Interceptor } from "@connectrpc/connect";
import { wrapMessages } from "../server/stream-response.js";

export interface IdleTracker {
  interceptor: Interceptor;
  /** Stops the clock (shutdown). */
  stop(): void;
}

const PASSIVE_SERVICES = new Set(["grpc.health.v1.Health"]);

export function createIdleTracker(opts: { timeoutMs: number; busy: () => boolean; onIdle: () => void }): IdleTracker {
  let inFlight = 0;
  let lastActive = Date.now();
  const leave = () => {
    inFlight--;
    lastActive = Date.now();
  };
  let timer: NodeJS.Timeout | undefined;
  if (opts.timeoutMs > 0) {
    timer = setInterval(() => {
      const now = Date.now();
      if (inFlight > 0 || opts.busy()) lastActive = now;
      else if (now - lastActive >= opts.timeoutMs) {
        clearInterval(timer);
        opts.onIdle();
      }
    }, Math.min(1000, Math.max(50, opts.timeoutMs / 8)));
  }

  const interceptor: Interceptor = (next) => async (req) => {
    if (PASSIVE_SERVICES.has(req.service.typeName)) return next(req);
    inFlight++;
    let streaming = false;
    try {
      const res = await next(req);
      streaming = res.stream;
      // A stream is work until its last message is out (or its reader is gone).
      return wrapMessages(res, async function* (source) {
        try {
          yield* source;
        } finally {
          leave();
        }
      });
    } finally {
      if (!streaming) leave();
    }
  };

  return {
    interceptor,
    stop: () => clearInterval(timer),
  };
}
