// kiln-scheduler as a real process (src/ through tsx), as a replica is run: its own config file
// and port, a client of its API, and ways to stop it gently or kill it with SIGKILL.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { schedulerClient, type SchedulerClient } from "../../src/client/kilnd.js";
import { freePort } from "./wait.js";

const ROOT = new URL("../..", import.meta.url).pathname;

export interface SchedulerProcess {
  url: string;
  proc: ChildProcess;
  client: SchedulerClient;
  output(): string;
  exited: Promise<number | null>;
  /** Signs and posts a push webhook; answers the HTTP status and JSON body. */
  push(o: { secret: string; repository: string; commit: string; before?: string; delivery?: string; ref?: string }): Promise<{ status: number; body: Record<string, unknown> }>;
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/** Starts one replica: config is written to configFile with a free listen port; resolves once it serves. */
export async function startSchedulerProcess(configFile: string, config: Record<string, unknown>, env: Record<string, string> = {}): Promise<SchedulerProcess> {
  const listen = `127.0.0.1:${await freePort()}`;
  writeFileSync(configFile, JSON.stringify({ ...config, listen }));
  const proc = spawn(process.execPath, ["--import", "tsx", `${ROOT}src/bin/kiln-scheduler.ts`, "--config", configFile, "--log-level", "debug"], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<number | null>((res) => proc.once("exit", (code) => res(code)));
  // Its own log says when it serves: waited for, not polled.
  await new Promise<void>((resolve, reject) => {
    const see = (d: Buffer) => {
      out += d;
      if (out.includes('"msg":"kiln-scheduler serving"')) resolve();
    };
    proc.stdout!.on("data", see);
    proc.stderr!.on("data", see);
    void exited.then((code) => reject(new Error(`kiln-scheduler exited (${code}) at start:\n${out}`)));
  });
  const url = `http://${listen}`;
  let gone = false;
  void exited.then(() => (gone = true));
  return {
    url,
    proc,
    client: schedulerClient(url),
    output: () => out,
    exited,
    async push(o) {
      const body = JSON.stringify({ ref: o.ref ?? "refs/heads/main", after: o.commit, ...(o.before ? { before: o.before } : {}), deleted: false, repository: { full_name: o.repository } });
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-hub-signature-256": `sha256=${createHmac("sha256", o.secret).update(body).digest("hex")}`,
      };
      if (o.delivery) headers["x-github-delivery"] = o.delivery;
      const r = await fetch(`${url}/webhooks/github`, { method: "POST", headers, body });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    },
    async stop() {
      if (!gone) proc.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      if (!gone) proc.kill("SIGKILL");
      await exited;
    },
  };
}
