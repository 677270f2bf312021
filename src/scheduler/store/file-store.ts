// The embedded default: one scheduler, its records as files under its data directory
// (deployments/<id>.json, projects.json for the projects made by API), everything else in
// memory and rebuilt from the records at start. One process holds every queue, so a lease is
// always granted.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, OrderCheckSchema, type Deployment } from "../../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../../errors/kiln-error.js";
import { MessageStore } from "../../store/message-store.js";
import { writeFileAtomic } from "../../util/fs-atomic.js";
import { newIdAfter } from "../../util/ids.js";
import type { ProjectConfig } from "../config.js";
import { isFinal } from "../deployment-events.js";
import { projectFromJson, projectJson, type ProjectSource, type StoredProject } from "../projects.js";
import { PushOrder } from "../push-order.js";
import type { Accepted, Lease, SchedulerStore, StoreEvents } from "./store.js";

export class FileStore implements SchedulerStore {
  readonly replica = "local";
  private readonly deployments: MessageStore<typeof DeploymentSchema>;
  private readonly byName = new Map<string, StoredProject>();
  /** X-GitHub-Delivery → the deployment it made. */
  private readonly deliveries = new Map<string, string>();
  private readonly pushOrder = new PushOrder();
  /** Each project's newest deployment id: the next one sorts after it. */
  private readonly lastId = new Map<string, string>();
  private readonly projectsFile: string;
  private projectWrites: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.deployments = new MessageStore(DeploymentSchema, join(dir, "deployments"));
    this.projectsFile = join(dir, "projects.json");
  }

  async start(_events: StoreEvents): Promise<void> {
    await mkdir(join(this.dir, "deployments"), { recursive: true });
    const all = await this.deployments.load((file, err) => this.logger.warn({ file, err }, "skipping an unreadable deployment record"));
    for (const d of [...all].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      this.lastId.set(d.project, d.id);
      if (d.delivery) this.deliveries.set(d.delivery, d.id);
      if (d.trigger !== "webhook") continue;
      const order = this.pushOrder.observe(d.project, d.commit, d.before);
      // An unordered push that git found newer had its check cleared when it was queued.
      if (!order.stale && order.unsureOf && !d.orderCheck) this.pushOrder.advance(d.project, d.commit);
    }
    let saved: unknown[] = [];
    try {
      saved = JSON.parse(await readFile(this.projectsFile, "utf8")) as unknown[];
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new KilnError("internal", `${this.projectsFile}: ${(e as Error).message}`);
    }
    for (const json of saved) {
      const config = projectFromJson(json as never);
      this.byName.set(config.name, { config, source: "api" });
    }
  }

  async close(): Promise<void> {
    await this.deployments.flush();
    await this.projectWrites;
  }

  async accept(d: Deployment): Promise<Accepted> {
    const seen = d.delivery ? this.deliveries.get(d.delivery) : undefined;
    if (seen) return { deployment: this.deployments.get(seen)!, duplicate: true };
    d.id = newIdAfter(this.lastId.get(d.project));
    this.lastId.set(d.project, d.id);
    if (d.trigger === "webhook") {
      const order = this.pushOrder.observe(d.project, d.commit, d.before);
      const newestOf = (commit: string) => this.deployments.list(d.project, 0).find((x) => x.commit === commit && x.trigger === "webhook");
      if (order.stale) {
        const newer = newestOf(order.newer);
        d.state = DeploymentState.SUPERSEDED;
        d.error = `an older commit of the branch than ${order.newer}, delivered after it: not deployed`;
        if (newer) d.supersededBy = newer.id;
      } else if (order.unsureOf) {
        d.orderCheck = create(OrderCheckSchema, { commit: order.unsureOf, deploymentId: newestOf(order.unsureOf)?.id ?? "" });
      }
    }
    // Taken before the write: a retry arriving meanwhile finds it.
    if (d.delivery) this.deliveries.set(d.delivery, d.id);
    await this.deployments.save(d);
    return { deployment: create(DeploymentSchema, d), duplicate: false };
  }

  async get(id: string) {
    return this.deployments.get(id);
  }

  async list(project: string | undefined, limit: number) {
    return this.deployments.list(project, limit);
  }

  async open(project: string) {
    return this.deployments
      .list(project, 0)
      .filter((d) => !isFinal(d.state))
      .reverse();
  }

  async save(d: Deployment, _lease: Lease): Promise<void> {
    await this.deployments.save(d);
  }

  async advanceHead(project: string, commit: string, _lease: Lease): Promise<void> {
    this.pushOrder.advance(project, commit);
  }

  async projects() {
    return [...this.byName.values()].sort((a, b) => (a.config.name < b.config.name ? -1 : 1));
  }

  async project(name: string) {
    return this.byName.get(name);
  }

  async projectFor(repository: string, branch: string) {
    for (const p of this.byName.values()) if (p.config.github.toLowerCase() === repository.toLowerCase() && p.config.branch === branch) return p.config;
    return undefined;
  }

  async putProject(p: ProjectConfig, source: ProjectSource, mode: "create" | "replace" | "upsert"): Promise<void> {
    const had = this.byName.get(p.name);
    if (had && mode === "create") throw new KilnError("already_exists", `project: ${p.name} exists`);
    if (!had && mode === "replace") throw new KilnError("not_found", `project: no project ${JSON.stringify(p.name)}`);
    this.byName.set(p.name, { config: p, source });
    await this.writeProjects();
  }

  async deleteProject(name: string, reason: string): Promise<boolean> {
    if (!this.byName.delete(name)) return false;
    await this.writeProjects();
    for (const d of await this.open(name)) {
      d.state = DeploymentState.FAILED;
      d.error = reason;
      await this.deployments.save(d);
    }
    return true;
  }

  /** The API's projects (the config file's are the config file's). */
  private writeProjects(): Promise<void> {
    const json = JSON.stringify([...this.byName.values()].filter((p) => p.source === "api").map((p) => projectJson(p.config)));
    const next = this.projectWrites.then(() => writeFileAtomic(this.projectsFile, json));
    this.projectWrites = next.catch(() => {});
    return next;
  }

  async claim(project: string): Promise<Lease> {
    return { project, epoch: 0 };
  }

  async renew(): Promise<Set<string>> {
    return new Set(this.byName.keys());
  }

  async release(_lease: Lease): Promise<void> {}

  /** Projects with open deployments: at start, what a previous run left unfinished (one replica: nobody else holds them). */
  async orphans(limit: number): Promise<string[]> {
    const out = new Set<string>();
    for (const d of this.deployments.list(undefined, 0)) {
      if (!isFinal(d.state)) out.add(d.project);
      if (out.size >= limit) break;
    }
    return [...out];
  }
}
