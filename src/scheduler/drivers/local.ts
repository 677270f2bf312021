// The local driver, the embedded default: kilnd for the project runs on this host with its own
// data directory and port. When kilnd has gone to sleep (exit 0), the next wake starts it again:
// the same wake/sleep cycle as a Fly Machine, for real, on one host.
// kilnd outlives a scheduler that is killed: it runs in its own process group and writes its log
// to <data>/kilnd.log itself. A restarted scheduler asks the data directory's lock who serves it
// (src/daemon/data-lock.ts) and drives that kilnd instead of starting a second one on the volume.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { dataDirHolder } from "../../daemon/data-lock.js";
import { parseHostPort } from "../../util/host-port.js";
import { freePort } from "../../util/net.js";
import type { LocalMachineConfig } from "../config.js";
import { permanentWakeError, waitForKilnd, type MachineDriver } from "./driver.js";

// kilnd beside this module: dist/bin/kilnd.js when built, src/bin/kilnd.ts under tsx.
const KILND = new URL(`../../bin/kilnd${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url).pathname;
const ADOPTED_POLL_MS = 100;
const START_TIMEOUT_MS = 30_000;

export function createLocalDriver(project: string, cfg: LocalMachineConfig, opts: { logger: Logger; tokenFile?: string }): MachineDriver {
  /** The kilnd this driver started, while it runs. */
  let child: ChildProcess | undefined;
  let exited: Promise<number | null> = Promise.resolve(null);
  /** A kilnd found serving the volume (started by an earlier scheduler), while it runs. */
  let adopted: { pid: number } | undefined;
  let port = cfg.port;
  mkdirSync(cfg.data, { recursive: true });

  const start = async () => {
    port ||= await freePort();
    const args = [KILND, "--listen", `127.0.0.1:${port}`, "--data", cfg.data, "--idle-timeout", String(cfg.idleTimeout)];
    for (const r of cfg.insecureRegistries) args.push("--insecure-registry", r);
    if (opts.tokenFile) args.push("--token-file", opts.tokenFile);
    // src/ runs through tsx (tests); dist/ is plain JavaScript.
    const execArgv = KILND.endsWith(".ts") ? ["--import", "tsx"] : [];
    const log = openSync(join(cfg.data, "kilnd.log"), "a", 0o600);
    let c: ChildProcess;
    try {
      c = spawn(process.execPath, [...execArgv, ...args], { stdio: ["ignore", log, log], detached: true });
    } finally {
      closeSync(log); // the child has its own copy
    }
    c.unref();
    child = c;
    exited = new Promise((res) =>
      c.once("exit", (code) => {
        opts.logger.info({ project, code }, code === 0 ? "local kilnd is asleep" : "local kilnd exited");
        if (child === c) child = undefined;
        res(code);
      }),
    );
    opts.logger.info({ project, port, pid: c.pid }, "waking local kilnd");
    await waitForKilnd(`http://127.0.0.1:${port}`, START_TIMEOUT_MS, () => child !== c);
  };

  /** A kilnd already serving the volume: drive it. */
  const adopt = async (): Promise<boolean> => {
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const holder = await dataDirHolder(cfg.data);
      if (!holder) return false;
      if (holder.listen) {
        port = parseHostPort(holder.listen, "the data directory's kilnd").port;
        adopted = { pid: holder.pid };
        opts.logger.info({ project, port, pid: holder.pid }, "local kilnd already serving this volume: driving it");
        await waitForKilnd(`http://127.0.0.1:${port}`, START_TIMEOUT_MS, () => !isAlive(holder.pid));
        return true;
      }
      // It holds the volume and does not serve yet (starting): wait for it.
      if (Date.now() > deadline) throw new Error(`kilnd pid ${holder.pid} holds ${cfg.data} and does not serve`);
      await new Promise((r) => setTimeout(r, ADOPTED_POLL_MS));
    }
  };

  const adoptedAlive = () => {
    if (adopted && !isAlive(adopted.pid)) adopted = undefined;
    return adopted !== undefined;
  };

  let closed = false;
  return {
    async wake() {
      if (closed) throw permanentWakeError("the scheduler is stopping");
      if (!child && !adoptedAlive() && !(await adopt())) await start();
      return `http://127.0.0.1:${port}`;
    },
    async waitAsleep(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      if (child) {
        const t = new Promise<"timeout">((r) => setTimeout(r, timeoutMs, "timeout").unref());
        return (await Promise.race([exited, t])) !== "timeout";
      }
      // Not our child: no exit event to wait for, so watch the process.
      while (adoptedAlive()) {
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, ADOPTED_POLL_MS));
      }
      return true;
    },
    async close() {
      closed = true;
      if (child) {
        child.kill("SIGTERM");
        await exited;
      } else if (adoptedAlive()) {
        process.kill(adopted!.pid, "SIGTERM");
        while (adoptedAlive()) await new Promise((r) => setTimeout(r, ADOPTED_POLL_MS));
      }
    },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
