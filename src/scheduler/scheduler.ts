// The scheduler: accepted commits become durable deployment records in the store; each project's
// queue (its open deployments) is driven by one worker, on the one replica holding the project's
// lease. A replica takes a queue when it learns of work for it (a commit it accepted, another
// replica's notification, a queue whose holder died), drives it until it is empty and the
// machine asleep, then lets it go. With the file store there is one replica and every lease is
// its own; on start it picks up what a previous run left unfinished, so nothing accepted is lost.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, DeploymentTimesSchema, type Deployment } from "../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../errors/kiln-error.js";
import { timestampFromMs } from "../util/time.js";
import { COMMIT_PATTERN } from "../validate/build-request.js";
import type { ProjectConfig, SchedulerConfig } from "./config.js";
import { DeploymentEvents } from "./deployment-events.js";
import type { MachineDriver } from "./drivers/driver.js";
import { createFlyDriver } from "./drivers/fly.js";
import { createLocalDriver } from "./drivers/local.js";
import { ProjectWorker } from "./project-worker.js";
import { createProjectSecrets, type ProjectSecrets } from "./project-secrets.js";
import { FileStore } from "./store/file-store.js";
import { PgStore } from "./store/pg-store.js";
import { LeaseLost, type Lease, type SchedulerStore } from "./store/store.js";
import { parseWebhook, type PushEvent } from "./webhook.js";

/** How often a replica looks for queues nobody holds (PostgreSQL store). */
const SWEEP_MS = 1000;
const SWEEP_BATCH = 200;

export interface SchedulerOptions {
  backoffMs?: number;
  /** A store other than the one the config names (tests). */
  store?: SchedulerStore;
}

/** A project's queue that this replica drives. */
interface Held {
  lease: Lease;
  worker: ProjectWorker;
  /** Deployments handed to the worker. */
  known: Set<string>;
}

export class Scheduler {
  readonly events = new DeploymentEvents();
  readonly store: SchedulerStore;
  private readonly held = new Map<string, Held>();
  /** Machine drivers by project, kept while the machine's settings stay (a local kilnd's port, its child process). */
  private readonly drivers = new Map<string, { key: string; driver: MachineDriver }>();
  private readonly secretSets = new Map<string, { key: string; secrets: ProjectSecrets }>();
  /** ensure() of a project, one at a time; again: asked once more while it ran. */
  private readonly ensuring = new Map<string, { done: Promise<void>; again: boolean }>();
  private readonly timers: NodeJS.Timeout[] = [];
  private webhookSecret: string | undefined;
  private closing = false;

  constructor(
    private readonly cfg: SchedulerConfig,
    private readonly logger: Logger,
    private readonly opts: SchedulerOptions = {},
  ) {
    this.store = opts.store ?? (cfg.database ? new PgStore(cfg.database, logger, cfg.leaseSeconds) : new FileStore(cfg.data, logger));
  }

  /** Several replicas may share the store: leases are renewed and orphaned queues looked for. */
  private get shared(): boolean {
    return !(this.store instanceof FileStore);
  }

  async start(): Promise<void> {
    if (this.cfg.webhookSecretFile) this.webhookSecret = (await readFile(this.cfg.webhookSecretFile, "utf8")).trim();
    await this.store.start({
      // Only the holder acts on another replica's commit (the accepting replica takes a queue
      // nobody holds itself, and the sweep finds any left over): the others do not race for it.
      work: (project) => {
        if (this.held.has(project)) this.poke(project);
      },
      deployment: (id) => void this.relayRemote(id),
      resync: () => {
        for (const p of this.held.keys()) this.poke(p);
        void this.sweep();
      },
    });
    for (const p of this.cfg.projects) await this.store.putProject(p, "config", "upsert");
    // Unfinished deployments of a previous run (of this replica or, shared, of one that died).
    for (const p of await this.store.orphans(Number.MAX_SAFE_INTEGER)) this.poke(p);
    if (this.shared) {
      const every = (ms: number, f: () => Promise<void>) => {
        let busy = false;
        const t = setInterval(() => {
          if (busy || this.closing) return;
          busy = true;
          void f()
            .catch((err) => this.logger.warn({ err }, "scheduler housekeeping failed"))
            .finally(() => (busy = false));
        }, ms);
        t.unref();
        this.timers.push(t);
      };
      every(Math.max(500, (this.cfg.leaseSeconds * 1000) / 3), () => this.renew());
      every(SWEEP_MS, () => this.sweep());
    }
  }

  /** Accepts a commit of a project: the deployment is durable before this returns. */
  async submit(project: string, commit: string, trigger: "webhook" | "rpc", push?: PushEvent): Promise<{ deployment: Deployment; duplicate: boolean }> {
    if (!COMMIT_PATTERN.test(commit)) throw new KilnError("invalid_argument", `commit: ${JSON.stringify(commit.slice(0, 80))} is not a full commit SHA (40 or 64 hex digits)`);
    if (!(await this.store.project(project))) throw new KilnError("not_found", `project: ${JSON.stringify(project)} is not configured`);
    return this.accept(project, commit, trigger, push);
  }

  /** submit() once the commit and the project are known to be good. */
  private async accept(project: string, commit: string, trigger: "webhook" | "rpc", push?: PushEvent): Promise<{ deployment: Deployment; duplicate: boolean }> {
    const now = Date.now();
    // The store gives it its id, in the order it accepts the project's commits.
    const d = create(DeploymentSchema, {
      project,
      commit,
      state: DeploymentState.QUEUED,
      trigger,
      times: create(DeploymentTimesSchema, { received: timestampFromMs(now) }),
      ...(push ? { delivery: push.delivery, before: push.before } : {}),
    });
    const accepted = await this.store.accept(d);
    const a = accepted.deployment;
    if (accepted.duplicate) return accepted;
    if (a.state === DeploymentState.SUPERSEDED) {
      this.logger.warn({ deployment: a.id, project, commit, error: a.error }, "push delivered out of order: older than the branch's newest; not deployed");
      return accepted;
    }
    this.logger.info({ deployment: a.id, project, commit, trigger }, "commit accepted");
    this.poke(project);
    return accepted;
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
    const branch = w.push.ref.startsWith("refs/heads/") ? w.push.ref.slice("refs/heads/".length) : undefined;
    const project = branch === undefined ? undefined : await this.store.projectFor(w.push.repository, branch);
    if (!project) return { status: 202, body: { ignored: `no project for ${w.push.repository} ${w.push.ref}` } };
    // GitHub retries a delivery it did not see answered: the same delivery is the same deployment.
    // The parser checked the commit, and the project was just looked up.
    const { deployment: d, duplicate } = await this.accept(project.name, w.push.commit, "webhook", w.push);
    const out: Record<string, unknown> = { deployment: d.id, project: d.project, commit: d.commit };
    if (duplicate) out.duplicate = true;
    else if (d.state === DeploymentState.SUPERSEDED) out.superseded = d.error;
    return { status: 202, body: out };
  }

  async get(id: string): Promise<Deployment> {
    const d = await this.store.get(id);
    if (!d) throw new KilnError("not_found", `deployment_id: no deployment ${JSON.stringify(id)}`);
    return d;
  }

  list(project: string | undefined, limit: number): Promise<Deployment[]> {
    return this.store.list(project, limit);
  }

  /** The project changed or was deleted: its worker (if here) takes the change or stops. */
  async projectChanged(name: string): Promise<void> {
    this.poke(name);
    await this.ensuring.get(name)?.done;
  }

  /** Stops driving a project about to be deleted (its build cancelled on kilnd); the store ends its records. */
  async dropProject(name: string): Promise<void> {
    const h = this.held.get(name);
    if (h) {
      this.held.delete(name);
      await h.worker.abandon("the project was deleted");
    }
  }

  /** Says there is work for the project: it is taken and driven here if nobody else drives it. */
  private poke(project: string): void {
    if (this.closing) return;
    const running = this.ensuring.get(project);
    if (running) {
      running.again = true;
      return;
    }
    const entry = { done: Promise.resolve(), again: false };
    entry.done = (async () => {
      do {
        entry.again = false;
        await this.ensure(project).catch((err) => this.logger.warn({ err, project }, "cannot take up the project's queue (looked at again soon)"));
      } while (entry.again && !this.closing);
      this.ensuring.delete(project);
    })();
    this.ensuring.set(project, entry);
  }

  private async ensure(name: string): Promise<void> {
    let h = this.held.get(name);
    const stored = await this.store.project(name);
    if (!h) {
      if ((await this.store.open(name)).length === 0) return;
      const lease = await this.store.claim(name);
      if (!lease) return; // another replica drives it
      if (!stored) {
        for (const d of await this.store.open(name)) {
          d.state = DeploymentState.FAILED;
          d.error = "the project is no longer configured";
          await this.store.save(d, lease);
        }
        await this.store.release(lease);
        return;
      }
      h = this.hold(stored.config, lease);
    } else if (!stored) {
      // Deleted elsewhere: the store has ended its deployments and its lease.
      this.held.delete(name);
      await h.worker.abandon("the project was deleted");
      return;
    } else h.worker.setProject(stored.config);
    const open = await this.store.open(name);
    if (this.held.get(name) !== h) return this.poke(name); // went idle meanwhile: take it again
    for (const d of open) {
      if (h.known.has(d.id)) continue;
      h.known.add(d.id);
      if (d.state !== DeploymentState.QUEUED) this.logger.info({ deployment: d.id, project: name, state: DeploymentState[d.state] }, "resuming a deployment another run left open");
      h.worker.submit(d);
    }
  }

  private hold(project: ProjectConfig, lease: Lease): Held {
    const h: Held = { lease, known: new Set(), worker: undefined as unknown as ProjectWorker };
    h.worker = new ProjectWorker({
      project,
      driver: this.driverFor(project),
      save: (d) => this.save(h, d),
      secrets: (p) => this.secretsFor(p),
      advanceHead: (commit) => this.store.advanceHead(project.name, commit, h.lease).catch((e) => {
        if (e instanceof LeaseLost) this.lost(h);
        throw e;
      }),
      events: this.events,
      logger: this.logger,
      onIdle: () => void this.idle(h),
      ...(this.opts.backoffMs ? { backoffMs: this.opts.backoffMs } : {}),
    });
    this.held.set(project.name, h);
    this.logger.debug({ project: project.name, epoch: lease.epoch, replica: this.store.replica }, "driving the project's queue");
    return h;
  }

  private async save(h: Held, d: Deployment): Promise<void> {
    try {
      await this.store.save(d, h.lease);
    } catch (e) {
      if (e instanceof LeaseLost) this.lost(h);
      throw e;
    }
  }

  /** Another replica took the queue (this one stalled past its lease): stop, touching nothing. */
  private lost(h: Held): void {
    const name = h.lease.project;
    if (this.held.get(name) !== h) return;
    this.held.delete(name);
    h.worker.stop();
    this.logger.warn({ project: name, replica: this.store.replica }, "lost the project's lease: another replica drives its queue now");
    void this.store.release(h.lease).finally(() => this.poke(name));
  }

  /** The queue is empty and the machine asleep: let the queue go (taken again at its next commit). */
  private async idle(h: Held): Promise<void> {
    const name = h.lease.project;
    if (this.held.get(name) !== h) return;
    this.held.delete(name);
    await this.store.release(h.lease).catch((err) => this.logger.warn({ err, project: name }, "cannot release the project's lease (it expires)"));
    this.poke(name); // a commit that came while letting go
  }

  private async renew(): Promise<void> {
    const still = await this.store.renew();
    for (const [name, h] of this.held) if (!still.has(name)) this.lost(h);
  }

  private async sweep(): Promise<void> {
    for (const p of await this.store.orphans(SWEEP_BATCH)) this.poke(p);
  }

  private drivenHere(id: string): boolean {
    for (const h of this.held.values()) if (h.known.has(id)) return true;
    return false;
  }

  /** Another replica changed a deployment somebody follows here: relay the record. */
  private async relayRemote(id: string): Promise<void> {
    // Followed here, and not driven here (the worker relays its own, and every save notifies).
    if (!this.events.has(id) || this.drivenHere(id)) return;
    const d = await this.store.get(id).catch(() => undefined);
    if (!d || this.held.get(d.project)?.known.has(id)) return;
    this.events.emit(id, { case: "deployment", value: d });
  }

  /** One per project and configuration: a GitHub App token is reused by the next worker while it is valid. */
  private secretsFor(p: ProjectConfig): ProjectSecrets {
    const key = JSON.stringify(p);
    const had = this.secretSets.get(p.name);
    if (had?.key === key) return had.secrets;
    const secrets = createProjectSecrets(p);
    this.secretSets.set(p.name, { key, secrets });
    return secrets;
  }

  private driverFor(p: ProjectConfig): MachineDriver {
    const key = JSON.stringify(p.machine) + (p.kilndTokenFile ?? "");
    const had = this.drivers.get(p.name);
    if (had?.key === key) return had.driver;
    if (had) void had.driver.close();
    const driver =
      p.machine.driver === "fly"
        ? createFlyDriver(p.name, p.machine, { logger: this.logger, ...(this.opts.backoffMs ? { backoffMs: this.opts.backoffMs } : {}) })
        : createLocalDriver(p.name, p.machine, { logger: this.logger, ...(p.kilndTokenFile ? { tokenFile: p.kilndTokenFile } : {}) });
    this.drivers.set(p.name, { key, driver });
    return driver;
  }

  /** Waits until every queue here is empty and its machine asleep (tests). */
  async settled(): Promise<void> {
    while (this.held.size || this.ensuring.size) {
      await Promise.all([...[...this.held.values()].map((h) => h.worker.idle()), ...[...this.ensuring.values()].map((e) => e.done)]);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Stops the workers where they are (their records stay, for the next run or another replica) and the machines. */
  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    await Promise.all([...this.ensuring.values()].map((e) => e.done));
    for (const h of this.held.values()) h.worker.stop();
    await Promise.all([...this.held.values()].map((h) => this.store.release(h.lease).catch(() => {})));
    this.held.clear();
    await this.store.close();
    await Promise.all([...this.drivers.values()].map((d) => d.driver.close()));
  }
}

/** The local driver's data directory for a project created by API. */
export const localMachineData = (cfg: SchedulerConfig) => (name: string) => join(cfg.data, "machines", name);

