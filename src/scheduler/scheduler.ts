// The scheduler: accepted commits become durable deployment records, handed to the project's
// worker. On start it picks up what a previous run left unfinished, so nothing accepted is lost.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, DeploymentTimesSchema, type Deployment } from "../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../errors/kiln-error.js";
import { MessageStore } from "../store/message-store.js";
import { newBuildId } from "../util/ids.js";
import { timestampFromMs } from "../util/time.js";
import type { ProjectConfig, SchedulerConfig } from "./config.js";
import { DeploymentEvents } from "./deployment-events.js";
import type { MachineDriver } from "./drivers/driver.js";
import { createFlyDriver } from "./drivers/fly.js";
import { createLocalDriver } from "./drivers/local.js";
import { isFinal, ProjectWorker } from "./project-worker.js";
import { parseWebhook } from "./webhook.js";

const COMMIT = /^[0-9a-f]{40}$/;

export class Scheduler {
  readonly events = new DeploymentEvents();
  private readonly store: MessageStore<typeof DeploymentSchema>;
  private readonly workers = new Map<string, ProjectWorker>();
  private readonly drivers: MachineDriver[] = [];
  private webhookSecret: string | undefined;

  constructor(
    private readonly cfg: SchedulerConfig,
    private readonly logger: Logger,
    private readonly opts: { backoffMs?: number } = {},
  ) {
    this.store = new MessageStore(DeploymentSchema, join(cfg.data, "deployments"));
  }

  async start(): Promise<void> {
    await mkdir(join(this.cfg.data, "deployments"), { recursive: true });
    if (this.cfg.webhookSecretFile) this.webhookSecret = (await readFile(this.cfg.webhookSecretFile, "utf8")).trim();
    for (const p of this.cfg.projects) {
      const driver =
        p.machine.driver === "fly"
          ? createFlyDriver(p.name, p.machine, { logger: this.logger, ...(this.opts.backoffMs ? { backoffMs: this.opts.backoffMs } : {}) })
          : createLocalDriver(p.name, p.machine, { logger: this.logger, ...(p.kilndTokenFile ? { tokenFile: p.kilndTokenFile } : {}) });
      this.drivers.push(driver);
      this.workers.set(p.name, new ProjectWorker({ project: p, driver, save: (d) => this.store.save(d), events: this.events, logger: this.logger, ...(this.opts.backoffMs ? { backoffMs: this.opts.backoffMs } : {}) }));
    }
    // Unfinished deployments of a previous run: the newest of each project goes on, older ones
    // were superseded by it.
    const all = await this.store.load((file, err) => this.logger.warn({ file, err }, "skipping an unreadable deployment record"));
    const open = all.filter((d) => !isFinal(d.state)).sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const d of open) {
      const worker = this.workers.get(d.project);
      if (!worker) {
        d.state = DeploymentState.FAILED;
        d.error = "the project is no longer configured";
        await this.store.save(d);
        continue;
      }
      this.logger.info({ deployment: d.id, project: d.project, state: DeploymentState[d.state] }, "resuming a deployment after a restart");
      worker.submit(d);
    }
  }

  /** Accepts a commit of a configured project: the deployment is on disk before this returns. */
  async submit(project: string, commit: string, trigger: "webhook" | "rpc"): Promise<Deployment> {
    const worker = this.workers.get(project);
    if (!worker) throw new KilnError("not_found", `project: ${JSON.stringify(project)} is not configured`);
    if (!COMMIT.test(commit)) throw new KilnError("invalid_argument", `commit: ${JSON.stringify(commit.slice(0, 80))} is not a full commit SHA`);
    const now = Date.now();
    const d = create(DeploymentSchema, {
      id: newBuildId(now),
      project,
      commit,
      state: DeploymentState.QUEUED,
      trigger,
      times: create(DeploymentTimesSchema, { received: timestampFromMs(now) }),
    });
    await this.store.save(d);
    this.logger.info({ deployment: d.id, project, commit, trigger }, "commit accepted");
    worker.submit(d);
    return create(DeploymentSchema, d);
  }

  /** A GitHub webhook: its HTTP status and JSON answer. */
  async webhook(body: Buffer, headers: { signature?: string; event?: string }): Promise<{ status: number; body: Record<string, unknown> }> {
    if (!this.webhookSecret) return { status: 404, body: { error: "webhooks are not configured (webhookSecretFile)" } };
    const w = parseWebhook(this.webhookSecret, body, headers);
    if ("error" in w) {
      this.logger.warn({ status: w.status, error: w.error }, "webhook refused");
      return { status: w.status, body: { error: w.error } };
    }
    if ("ignored" in w) return { status: 202, body: { ignored: w.ignored } };
    const project = this.cfg.projects.find((p) => p.github.toLowerCase() === w.push.repository.toLowerCase() && w.push.ref === `refs/heads/${p.branch}`);
    if (!project) return { status: 202, body: { ignored: `no project for ${w.push.repository} ${w.push.ref}` } };
    const d = await this.submit(project.name, w.push.commit, "webhook");
    return { status: 202, body: { deployment: d.id, project: d.project, commit: d.commit } };
  }

  get(id: string): Deployment {
    const d = this.store.get(id);
    if (!d) throw new KilnError("not_found", `deployment_id: no deployment ${JSON.stringify(id)}`);
    return d;
  }

  list(project: string | undefined, limit: number): Deployment[] {
    return this.store.list(project, limit);
  }

  projects(): ProjectConfig[] {
    return this.cfg.projects;
  }

  /** Waits until every worker is idle and its machine asleep (tests). */
  async settled(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.idle()));
  }

  /** Stops the workers where they are (their records stay for the next run) and the machines. */
  async close(): Promise<void> {
    for (const w of this.workers.values()) w.stop();
    await this.store.flush();
    await Promise.all(this.drivers.map((d) => d.close()));
  }
}
