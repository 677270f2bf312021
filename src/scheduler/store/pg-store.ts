// The scheduler's store in PostgreSQL, shared by any number of replicas. Every replica accepts
// commits; each project's queue is driven by the one replica holding its lease (a row renewed
// by its holder, taken over by another replica once expired; its epoch fences the old holder's
// writes). Replicas learn of each other's writes through LISTEN/NOTIFY, and a periodic look for
// orphaned queues covers a notification missed while a connection was down.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import pg from "pg";
import type { Logger } from "pino";
import { DeploymentSchema, DeploymentState, OrderCheckSchema, type Deployment } from "../../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../../errors/kiln-error.js";
import { newIdAfter } from "../../util/ids.js";
import type { ProjectConfig } from "../config.js";
import { projectFromJson, projectJson, type ProjectSource, type StoredProject } from "../projects.js";
import { migrate } from "./migrations.js";
import { LeaseLost, type Accepted, type Lease, type SchedulerStore, type StoreEvents } from "./store.js";

const OPEN = [DeploymentState.QUEUED, DeploymentState.WAKING, DeploymentState.BUILDING];
/** pg_advisory_xact_lock(PROJECT_LOCK, hashtext(project)): a project's accepts one at a time. */
const PROJECT_LOCK = 0x6b6c6e;
/** How far back a push's before links are followed to order it (as PushOrder does in memory). */
const MAX_WALK = 1000;
const LISTEN_RETRY_MS = 1000;

const recordJson = (d: Deployment) => toJson(DeploymentSchema, d) as JsonValue;
const fromRecord = (json: unknown) => fromJson(DeploymentSchema, json as JsonValue, { ignoreUnknownFields: true });

/** A database that cannot be reached is the caller's Unavailable, not an internal error. */
function dbError(e: unknown): never {
  if (e instanceof KilnError) throw e;
  const code = (e as { code?: string }).code ?? "";
  if (/^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|57P0[1-3]|08\w{3})$/.test(code) || /Connection terminated|timeout exceeded/.test((e as Error).message)) {
    throw new KilnError("unavailable", `the scheduler's database is unavailable: ${(e as Error).message}`, { cause: e });
  }
  throw e;
}

export class PgStore implements SchedulerStore {
  readonly replica = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  private readonly pool: pg.Pool;
  private listener: pg.Client | undefined;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    private readonly leaseSeconds: number,
  ) {
    this.pool = new pg.Pool({ connectionString: url, max: 10, connectionTimeoutMillis: 5000, idleTimeoutMillis: 30_000 });
    // An idle connection dropped by the server: the pool makes another when it is next needed.
    this.pool.on("error", (err) => this.logger.warn({ err }, "a database connection failed"));
  }

  async start(events: StoreEvents): Promise<void> {
    const { applied } = await migrate(this.pool).catch(dbError);
    if (applied.length) this.logger.info({ applied }, "database schema migrated");
    await this.listen(events);
  }

  /** LISTEN on a connection of its own, made again whenever it breaks (then a resync: notifications may have been missed). */
  private async listen(events: StoreEvents, again = false): Promise<void> {
    const c = new pg.Client({ connectionString: this.url });
    let broken = false;
    const reconnect = (err?: unknown) => {
      if (broken || this.closed) return;
      broken = true;
      if (this.listener === c) this.listener = undefined;
      this.logger.warn({ err }, "lost the database notification connection; connecting again");
      void c.end().catch(() => {});
      const retry = () => void this.listen(events, true).catch((e) => {
        this.logger.warn({ err: e }, "cannot listen for other replicas' changes yet");
        setTimeout(retry, LISTEN_RETRY_MS).unref();
      });
      setTimeout(retry, LISTEN_RETRY_MS).unref();
    };
    c.on("notification", (n) => {
      if (!n.payload) return;
      if (n.channel === "kiln_work") events.work(n.payload);
      else if (n.channel === "kiln_deployment") events.deployment(n.payload);
    });
    try {
      await c.connect();
      await c.query("LISTEN kiln_work; LISTEN kiln_deployment");
    } catch (e) {
      void c.end().catch(() => {});
      throw e;
    }
    c.on("error", reconnect);
    c.on("end", () => reconnect());
    this.listener = c;
    if (again) events.resync();
  }

  async close(): Promise<void> {
    this.closed = true;
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => {});
    // What this replica held is free for the others at once, not after the lease runs out.
    await this.pool.query("DELETE FROM leases WHERE holder = $1", [this.replica]).catch(() => {});
    await this.pool.end();
  }

  private async tx<T>(f: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect().catch(dbError);
    try {
      await c.query("BEGIN");
      const out = await f(c);
      await c.query("COMMIT");
      return out;
    } catch (e) {
      await c.query("ROLLBACK").catch(() => {});
      dbError(e);
    } finally {
      c.release();
    }
  }

  private q<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(sql, params).catch(dbError);
  }

  async accept(d: Deployment): Promise<Accepted> {
    return this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [PROJECT_LOCK, d.project]);
      // Read after the lock (a statement of its own, so that its snapshot sees what the lock's
      // previous holder committed): the delivery seen before, the project's newest id, its head.
      const known = (
        await c.query<{ seen: unknown; last: string | null; head: string | null }>(
          `SELECT (SELECT record FROM deployments WHERE delivery = $2) AS seen,
                  (SELECT id FROM deployments WHERE project = $1 ORDER BY id DESC LIMIT 1) AS last,
                  (SELECT commit FROM branch_heads WHERE project = $1) AS head`,
          [d.project, d.delivery || null],
        )
      ).rows[0]!;
      if (known.seen) return { deployment: fromRecord(known.seen), duplicate: true };
      // Ids of one project sort in the order they were accepted here (the queue's order), not
      // in the order their replicas' clocks read.
      d.id = newIdAfter(known.last ?? undefined);
      let stale = false;
      const head = known.head;
      if (d.trigger === "webhook" && head && head !== d.commit) {
        // One statement places the push against the head: a push delivered earlier that named
        // it as the commit it replaced (even when the pushes between are not known yet), and
        // the two walks back through before links: from the head (does it reach this push?)
        // and from this push's before (does it reach the head?).
        const placed = (
          await c.query<{ named_id: string | null; named_commit: string | null; head_reaches: boolean; before_reaches: boolean; head_id: string | null }>(
            `WITH RECURSIVE
               from_head(c, n) AS (
                 SELECT $2::text, 0
                 UNION
                 SELECT d.before, w.n + 1 FROM from_head w JOIN deployments d ON d.project = $1 AND d.commit = w.c AND d.before <> '' WHERE w.n < $5),
               from_before(c, n) AS (
                 SELECT $4::text, 0 WHERE $4::text <> ''
                 UNION
                 SELECT d.before, w.n + 1 FROM from_before w JOIN deployments d ON d.project = $1 AND d.commit = w.c AND d.before <> '' WHERE w.n < $5),
               named AS (
                 SELECT id, commit FROM deployments WHERE project = $1 AND before = $3 AND commit <> $3 AND trigger = 'webhook' ORDER BY id DESC LIMIT 1)
             SELECT (SELECT id FROM named) AS named_id, (SELECT commit FROM named) AS named_commit,
                    EXISTS (SELECT 1 FROM from_head WHERE c = $3) AS head_reaches,
                    EXISTS (SELECT 1 FROM from_before WHERE c = $2) AS before_reaches,
                    (SELECT id FROM deployments WHERE project = $1 AND commit = $2 AND trigger = 'webhook' ORDER BY id DESC LIMIT 1) AS head_id`,
            [d.project, head, d.commit, d.before, MAX_WALK],
          )
        ).rows[0]!;
        const newer = placed.named_id ? { id: placed.named_id, commit: placed.named_commit! } : placed.head_reaches ? { id: placed.head_id ?? "", commit: head } : undefined;
        if (newer) {
          stale = true;
          d.state = DeploymentState.SUPERSEDED;
          d.error = `an older commit of the branch than ${newer.commit}, delivered after it: not deployed`;
          d.supersededBy = newer.id;
        } else if (!placed.before_reaches) {
          // Newer only if this push's own before links reach the head; else git decides.
          d.orderCheck = create(OrderCheckSchema, { commit: head, deploymentId: placed.head_id ?? "" });
        }
      }
      const newHead = d.trigger === "webhook" && !stale && !d.orderCheck;
      // One statement writes the deployment, the branch's head when this push is its newest,
      // and the notification every replica gets when the transaction commits (none for a push
      // recorded stale: nothing to do).
      await c.query(
        `WITH dep AS (
           INSERT INTO deployments (id, project, commit, before, trigger, state, delivery, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING project),
         head AS (
           INSERT INTO branch_heads (project, commit) SELECT $2, $3 WHERE $9::boolean
           ON CONFLICT (project) DO UPDATE SET commit = EXCLUDED.commit)
         SELECT pg_notify('kiln_work', project) FROM dep WHERE $10::boolean`,
        [d.id, d.project, d.commit, d.before, d.trigger, d.state, d.delivery || null, recordJson(d), newHead, !stale],
      );
      return { deployment: create(DeploymentSchema, d), duplicate: false };
    });
  }

  async get(id: string) {
    const r = await this.q<{ record: unknown }>("SELECT record FROM deployments WHERE id = $1", [id]);
    return r.rows[0] ? fromRecord(r.rows[0].record) : undefined;
  }

  async list(project: string | undefined, limit: number) {
    const r = await this.q<{ record: unknown }>("SELECT record FROM deployments WHERE ($1::text IS NULL OR project = $1) ORDER BY id DESC LIMIT $2", [project ?? null, limit > 0 ? limit : null]);
    return r.rows.map((x) => fromRecord(x.record));
  }

  async open(project: string) {
    const r = await this.q<{ record: unknown }>("SELECT record FROM deployments WHERE project = $1 AND state = ANY($2) ORDER BY id", [project, OPEN]);
    return r.rows.map((x) => fromRecord(x.record));
  }

  async save(d: Deployment, lease: Lease): Promise<void> {
    // Written only while the lease is held, unexpired, at its epoch: a holder that stalled past
    // its expiry and was replaced cannot overwrite what its successor wrote.
    const r = await this.q(
      `WITH u AS (
         UPDATE deployments SET state = $5, record = $6 WHERE id = $1
           AND EXISTS (SELECT 1 FROM leases WHERE project = $2 AND holder = $3 AND epoch = $4 AND expires > now())
         RETURNING id
       ) SELECT pg_notify('kiln_deployment', id) FROM u`,
      [d.id, d.project, this.replica, lease.epoch, d.state, recordJson(d)],
    );
    if (!r.rowCount) throw new LeaseLost(d.project);
  }

  async advanceHead(project: string, commit: string, lease: Lease): Promise<void> {
    const held = await this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [PROJECT_LOCK, project]);
      const r = await c.query(
        `INSERT INTO branch_heads (project, commit)
           SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM leases WHERE project = $1 AND holder = $3 AND epoch = $4 AND expires > now())
         ON CONFLICT (project) DO UPDATE SET commit = EXCLUDED.commit`,
        [project, commit, this.replica, lease.epoch],
      );
      return (r.rowCount ?? 0) > 0;
    });
    if (!held) throw new LeaseLost(project);
  }

  async projects(): Promise<StoredProject[]> {
    const r = await this.q<{ spec: JsonValue; source: ProjectSource }>("SELECT spec, source FROM projects ORDER BY name", []);
    return r.rows.map((x) => ({ config: projectFromJson(x.spec), source: x.source }));
  }

  async project(name: string): Promise<StoredProject | undefined> {
    const r = await this.q<{ spec: JsonValue; source: ProjectSource }>("SELECT spec, source FROM projects WHERE name = $1", [name]);
    return r.rows[0] ? { config: projectFromJson(r.rows[0].spec), source: r.rows[0].source } : undefined;
  }

  async projectFor(repository: string, branch: string): Promise<ProjectConfig | undefined> {
    const r = await this.q<{ spec: JsonValue }>("SELECT spec FROM projects WHERE lower(github) = lower($1) AND branch = $2 ORDER BY name LIMIT 1", [repository, branch]);
    return r.rows[0] ? projectFromJson(r.rows[0].spec) : undefined;
  }

  async putProject(p: ProjectConfig, source: ProjectSource, mode: "create" | "replace" | "upsert"): Promise<void> {
    const values = [p.name, source, p.github, p.branch, projectJson(p)];
    const sql = {
      create: "INSERT INTO projects (name, source, github, branch, spec) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
      replace: "UPDATE projects SET source = $2, github = $3, branch = $4, spec = $5, updated = now() WHERE name = $1",
      upsert: "INSERT INTO projects (name, source, github, branch, spec) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET source = $2, github = $3, branch = $4, spec = $5, updated = now()",
    }[mode];
    await this.tx(async (c) => {
      const r = await c.query(sql, values);
      if (!r.rowCount && mode === "create") throw new KilnError("already_exists", `project: ${p.name} exists`);
      if (!r.rowCount && mode === "replace") throw new KilnError("not_found", `project: no project ${JSON.stringify(p.name)}`);
      await c.query("SELECT pg_notify('kiln_work', $1)", [p.name]);
    });
  }

  async deleteProject(name: string, reason: string): Promise<boolean> {
    return this.tx(async (c) => {
      const r = await c.query("DELETE FROM projects WHERE name = $1", [name]);
      if (!r.rowCount) return false;
      // The holder's next write is refused (no lease): it stops, and these stay FAILED.
      await c.query("DELETE FROM leases WHERE project = $1", [name]);
      const open = await c.query<{ record: unknown }>("SELECT record FROM deployments WHERE project = $1 AND state = ANY($2) FOR UPDATE", [name, OPEN]);
      for (const row of open.rows) {
        const d = fromRecord(row.record);
        d.state = DeploymentState.FAILED;
        d.error = reason;
        await c.query("UPDATE deployments SET state = $2, record = $3 WHERE id = $1", [d.id, d.state, recordJson(d)]);
        await c.query("SELECT pg_notify('kiln_deployment', $1)", [d.id]);
      }
      await c.query("SELECT pg_notify('kiln_work', $1)", [name]);
      return true;
    });
  }

  async claim(project: string): Promise<Lease | undefined> {
    const r = await this.q<{ epoch: string }>(
      `INSERT INTO leases (project, holder, epoch, expires) VALUES ($1, $2, 1, now() + make_interval(secs => $3))
       ON CONFLICT (project) DO UPDATE SET holder = EXCLUDED.holder, epoch = leases.epoch + 1, expires = EXCLUDED.expires
         WHERE leases.expires <= now()
       RETURNING epoch`,
      [project, this.replica, this.leaseSeconds],
    );
    return r.rows[0] ? { project, epoch: Number(r.rows[0].epoch) } : undefined;
  }

  async renew(): Promise<Set<string>> {
    const r = await this.q<{ project: string }>("UPDATE leases SET expires = now() + make_interval(secs => $2) WHERE holder = $1 AND expires > now() RETURNING project", [this.replica, this.leaseSeconds]);
    return new Set(r.rows.map((x) => x.project));
  }

  async release(lease: Lease): Promise<void> {
    await this.q("DELETE FROM leases WHERE project = $1 AND holder = $2 AND epoch = $3", [lease.project, this.replica, lease.epoch]);
  }

  async orphans(limit: number): Promise<string[]> {
    const r = await this.q<{ project: string }>(
      `SELECT DISTINCT d.project FROM deployments d
        WHERE d.state = ANY($1) AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.project = d.project AND l.expires > now())
        LIMIT $2`,
      [OPEN, limit],
    );
    return r.rows.map((x) => x.project);
  }
}
