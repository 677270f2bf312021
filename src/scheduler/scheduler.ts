// The scheduler: accepted commits become durable deployment records, handed to the project's
// worker. On start it picks up what a previous run left unfinished, so nothing accepted is lost.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, DeploymentTimesSchema, type Deployment } from "../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../errors/kiln-error.js";
import { MessageStore } from "../store/message-store.js";
import { newId } from "../util/ids.js";
import { timestampFromMs } from "../util/time.js";
import type { SchedulerConfig } from "./config.js";
import { DeploymentEvents } from "./deployment-events.js";
import type { MachineDriver } from "./drivers/driver.js";
import { createFlyDriver } from "./drivers/fly.js";
import { createLocalDriver } from "./drivers/local.js";
import { isFinal, ProjectWorker } from "./project-worker.js";
import { COMMIT_PATTERN } from "../validate/build-request.js";
import { PushOrder } from "./push-order.js";
import { parseWebhook, type PushEvent } from "./webhook.js";


export class Scheduler {
  readonly events = new DeploymentEvents();
  private readonly store: MessageStore<typeof DeploymentSchema>;
  private readonly workers = new Map<string, ProjectWorker>();
  private readonly drivers: MachineDriver[] = [];
  private webhookSecret: string | undefined;
  /** X-GitHub-Delivery → the deployment it made. */
  private readonly deliveries = new Map<string, string>();
  private readonly pushOrder = new PushOrder();

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
    for (const d of [...all].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      if (d.delivery) this.deliveries.set(d.delivery, d.id);
      if (d.trigger === "webhook") this.pushOrder.observe(d.project, d.commit, d.before);
    }
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
  async submit(project: string, commit: string, trigger: "webhook" | "rpc", push?: PushEvent): Promise<Deployment> {
    const worker = this.workers.get(project);
    if (!worker) throw new KilnError("not_found", `project: ${JSON.stringify(project)} is not configured`);
    if (!COMMIT_PATTERN.test(commit)) throw new KilnError("invalid_argument", `commit: ${JSON.stringify(commit.slice(0, 80))} is not a full commit SHA (40 or 64 hex digits)`);
    const now = Date.now();
    const d = create(DeploymentSchema, {
      id: newId(now),
      project,
      commit,
      state: DeploymentState.QUEUED,
      trigger,
      times: create(DeploymentTimesSchema, { received: timestampFromMs(now) }),
      ...(push ? { delivery: push.delivery, before: push.before } : {}),
    });
    const order = push ? this.pushOrder.observe(project, commit, push.before) : { stale: false as const };
    if (order.stale) {
      // Delivered after a newer push of the branch: recorded, never built, and it supersedes nothing.
      const newer = this.store.list(project, 0).find((x) => x.commit === order.newer);
      d.state = DeploymentState.SUPERSEDED;
      d.error = `an older commit of the branch than ${order.newer}, delivered after it: not deployed`;
      if (newer) d.supersededBy = newer.id;
    }
    // Taken before the save: a retry arriving meanwhile finds it.
    if (push?.delivery) this.deliveries.set(push.delivery, d.id);
    await this.store.save(d);
    if (order.stale) {
      this.logger.warn({ deployment: d.id, project, commit, newer: order.newer }, "push delivered out of order: older than the branch's newest; not deployed");
      return create(DeploymentSchema, d);
    }
    this.logger.info({ deployment: d.id, project, commit, trigger }, "commit accepted");
    worker.submit(d);
    return create(DeploymentSchema, d);
  }

  /** A GitHub webhook: its HTTP status and JSON answer. */
  async webhook(body: Buffer, headers: { signature?: string; event?: string; delivery?: string }): Promise<{ status: number; body: Record<string, unknown> }> {
    if (!this.webhookSecret) return { status: 404, body: { error: "webhooks are not configured (webhookSecretFile)" } };
    const w = parseWebhook(this.webhookSecret, body, headers);
    if ("error" in w) {
      this.logger.warn({ status: w.status, error: w.error }, "webhook refused");
      return { status: w.status, body: { error: w.error } };
    }
    if ("ignored" in w) return { status: 202, body: { ignored: w.ignored } };
    const project = this.cfg.projects.find((p) => p.github.toLowerCase() === w.push.repository.toLowerCase() && w.push.ref === `refs/heads/${p.branch}`);
    if (!project) return { status: 202, body: { ignored: `no project for ${w.push.repository} ${w.push.ref}` } };
    // GitHub retries a delivery it did not see answered: the same delivery is the same deployment.
    const seen = w.push.delivery ? this.deliveries.get(w.push.delivery) : undefined;
    if (seen) return { status: 202, body: { deployment: seen, project: project.name, commit: w.push.commit, duplicate: true } };
    const d = await this.submit(project.name, w.push.commit, "webhook", w.push);
    const out: Record<string, unknown> = { deployment: d.id, project: d.project, commit: d.commit };
    if (d.state === DeploymentState.SUPERSEDED) out.superseded = d.error;
    return { status: 202, body: out };
  }

  get(id: string): Deployment {
    const d = this.store.get(id);
    if (!d) throw new KilnError("not_found", `deployment_id: no deployment ${JSON.stringify(id)}`);
    return d;
  }

  list(project: string | undefined, limit: number): Deployment[] {
    return this.store.list(project, limit);
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
