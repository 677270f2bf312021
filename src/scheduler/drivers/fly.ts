// The fly driver: wakes a Fly Machine through the Machines REST API (start, then wait for state
// "started"), then waits for kilnd on the machine's private address. Transient failures (429,
// 5xx, a wait that times out with 408, a state conflict while the machine is still stopping)
// are retried with backoff, bounded; 401/403/404 are not.
import type { Logger } from "pino";
import type { FlyMachineConfig } from "../config.js";
import { flyApi, isPermanentFlyError, type FlyError } from "./fly-api.js";
import { permanentWakeError, waitForKilnd, type MachineDriver } from "./driver.js";


export interface FlyDriverOptions {
  logger: Logger;
  backoffMs?: number;
  /** Rounds of start-and-wait before giving up (default 6). */
  attempts?: number;
  /** How long one wait call may block on Fly's side (default 30 s; Fly allows up to 60). */
  waitSeconds?: number;
}

export function createFlyDriver(project: string, cfg: FlyMachineConfig, opts: FlyDriverOptions): MachineDriver {
  const ATTEMPTS = opts.attempts ?? 6;
  const WAIT_SECONDS = opts.waitSeconds ?? 30;
  const base = `/v1/apps/${encodeURIComponent(cfg.app)}/machines/${encodeURIComponent(cfg.machineId)}`;
  const backoff = opts.backoffMs ?? 250;

  const api = flyApi(cfg.apiUrl, cfg.apiTokenFile);
  const call = (method: string, path: string, timeoutMs?: number) => api(method, `${base}${path}`, timeoutMs ? { timeoutMs } : {});
  const permanent = isPermanentFlyError;

  /** One round: start (a conflict is fine if the machine is, or is becoming, started), then wait. */
  const startAndWait = async (): Promise<FlyError | undefined> => {
    const start = await call("POST", "/start");
    if (!start.ok) {
      if (permanent(start)) throw permanentWakeError(`Machines API: start: ${start.status} ${start.message}`);
      if (start.status !== 409 && start.status !== 412) return start;
      // A state conflict: look at the machine before deciding.
      const m = await call("GET", "");
      if (!m.ok) return m;
      const state = String(m.body.state ?? "");
      if (state !== "started" && state !== "starting") return { status: start.status, message: `machine is ${state}: ${start.message}` };
    }
    const wait = await call("GET", `/wait?state=started&timeout=${WAIT_SECONDS}`, (WAIT_SECONDS + 5) * 1000);
    if (!wait.ok) {
      if (permanent(wait)) throw permanentWakeError(`Machines API: wait: ${wait.status} ${wait.message}`);
      return wait;
    }
    return undefined;
  };

  return {
    async wake() {
      let last: FlyError | undefined;
      for (let i = 0; i < ATTEMPTS; i++) {
        last = await startAndWait();
        if (!last) {
          await waitForKilnd(cfg.kilndUrl, 30_000);
          return cfg.kilndUrl;
        }
        opts.logger.warn({ project, status: last.status, error: last.message, attempt: i + 1 }, "waking the Fly Machine failed; retrying");
        await new Promise((r) => setTimeout(r, backoff * 2 ** i));
      }
      throw new Error(`cannot wake Fly Machine ${cfg.machineId} after ${ATTEMPTS} attempts: ${last?.status} ${last?.message}`);
    },
    async waitAsleep(timeoutMs) {
      const r = await call("GET", `/wait?state=stopped&timeout=${Math.max(1, Math.round(timeoutMs / 1000))}`, timeoutMs + 5000);
      return r.ok;
    },
    async close() {},
  };
}
