// The local driver, the embedded default: kilnd for the project runs on this host as a child
// process with its own data directory and port. When kilnd has gone to sleep (exit 0), the next
// wake starts it again: the same wake/sleep cycle as a Fly Machine, for real, on one host.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { freePort } from "../../util/net.js";
import type { LocalMachineConfig } from "../config.js";
import { PermanentWakeError, waitForKilnd, type MachineDriver } from "./driver.js";

// kilnd beside this module: dist/bin/kilnd.js when built, src/bin/kilnd.ts under tsx.
const KILND = new URL(`../../bin/kilnd${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url).pathname;

export function createLocalDriver(project: string, cfg: LocalMachineConfig, opts: { logger: Logger; tokenFile?: string }): MachineDriver {
  let child: ChildProcess | undefined;
  let exited: Promise<number | null> = Promise.resolve(null);
  let port = cfg.port;
  mkdirSync(cfg.data, { recursive: true });

  const start = async () => {
    port ||= await freePort();
    const args = [KILND, "--listen", `127.0.0.1:${port}`, "--data", cfg.data, "--idle-timeout", String(cfg.idleTimeout)];
    for (const r of cfg.insecureRegistries) args.push("--insecure-registry", r);
    if (opts.tokenFile) args.push("--token-file", opts.tokenFile);
    // src/ runs through tsx (tests); dist/ is plain JavaScript.
    const execArgv = KILND.endsWith(".ts") ? ["--import", "tsx"] : [];
    const log = createWriteStream(join(cfg.data, "kilnd.log"), { flags: "a" });
    const c = spawn(process.execPath, [...execArgv, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    c.stdout!.pipe(log);
    c.stderr!.pipe(log);
    child = c;
    exited = new Promise((res) =>
      c.once("exit", (code) => {
        opts.logger.info({ project, code }, code === 0 ? "local kilnd is asleep" : "local kilnd exited");
        if (child === c) child = undefined;
        res(code);
      }),
    );
    opts.logger.info({ project, port, pid: c.pid }, "waking local kilnd");
    await waitForKilnd(`http://127.0.0.1:${port}`, 30_000, () => child !== c);
  };

  let closed = false;
  return {
    async wake() {
      if (closed) throw new PermanentWakeError("the scheduler is stopping");
      if (!child) await start();
      return `http://127.0.0.1:${port}`;
    },
    async waitAsleep(timeoutMs) {
      if (!child) return true;
      const t = new Promise<"timeout">((r) => setTimeout(r, timeoutMs, "timeout").unref());
      return (await Promise.race([exited, t])) !== "timeout";
    },
    async close() {
      closed = true;
      if (child) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
