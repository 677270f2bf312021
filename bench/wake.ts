// The wake scenario through the scheduler, as production runs it: kiln-scheduler with the local
// driver (kilnd as a child process that exits when told to sleep), a signed GitHub push webhook,
// and the time from sending it to the pushed digest being known, with kilnd asleep at the start.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { DeploymentState, SchedulerService } from "../src/gen/kiln/v1/scheduler_pb.js";
import type { BenchApp, BenchEnv } from "./engines/engine.js";

export interface SchedulerBench {
  /** Sends the push webhook for commit; resolves with ms to the digest once kilnd is asleep again. */
  deploy(commit: string): Promise<{ ms: number; digest: string }>;
  close(): Promise<void>;
}

export async function schedulerBench(env: BenchEnv, app: BenchApp, port: number): Promise<SchedulerBench> {
  const dir = join(env.work, "scheduler");
  mkdirSync(dir, { recursive: true });
  const secret = randomBytes(18).toString("base64url");
  writeFileSync(join(dir, "webhook-secret"), `${secret}\n`);
  const config = {
    listen: `127.0.0.1:${port}`,
    data: "state",
    webhookSecretFile: "webhook-secret",
    projects: [
      {
        name: app.name,
        git: app.repo,
        github: `bench/${app.name}`,
        branch: "main",
        image: `${env.registry}/bench/scheduler-${app.name}`,
        machine: { driver: "local", data: join(dir, "kilnd"), idleTimeout: 300, insecureRegistries: [env.registry] },
      },
    ],
  };
  writeFileSync(join(dir, "scheduler.json"), JSON.stringify(config, null, 2));
  const proc: ChildProcess = spawn(process.execPath, [join(env.root, "dist/bin/kiln-scheduler.js"), "--config", join(dir, "scheduler.json")], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  const client = createClient(SchedulerService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
  for (let i = 0; ; i++) {
    if ((await fetch(`${base}/healthz`).catch(() => undefined))?.ok) break;
    if (i > 300 || proc.exitCode !== null) throw new Error("kiln-scheduler did not start");
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    async deploy(commit) {
      const body = JSON.stringify({ ref: "refs/heads/main", after: commit, deleted: false, repository: { full_name: `bench/${app.name}` } });
      const sig = createHmac("sha256", secret).update(body).digest("hex");
      const t0 = performance.now();
      const res = await fetch(`${base}/webhooks/github`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-github-event": "push", "x-hub-signature-256": `sha256=${sig}` },
        body,
      });
      if (!res.ok) throw new Error(`webhook: HTTP ${res.status} ${await res.text()}`);
      const id = ((await res.json()) as { deployment: string }).deployment;
      let ms = 0;
      let digest = "";
      for (;;) {
        const d = (await client.getDeployment({ deploymentId: id })).deployment!;
        if (d.state === DeploymentState.FAILED) throw new Error(`deployment ${id} failed: ${d.error}`);
        if (!digest && d.imageDigest) {
          ms = performance.now() - t0;
          digest = d.imageDigest;
        }
        if (digest && d.times?.machineAsleep) return { ms, digest };
        await new Promise((r) => setTimeout(r, digest ? 50 : 5));
      }
    },
    async close() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      await new Promise((r) => proc.once("exit", r));
    },
  };
}
