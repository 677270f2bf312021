// The scheduler's PostgreSQL schema, as numbered migrations applied in order at start. Replicas
// starting at once are serialised by a transaction-scoped advisory lock: the first applies what
// is missing, the others then find it applied. A database newer than this scheduler (a version
// it does not know) is refused rather than written by old code.
import type { Pool } from "pg";
import { KilnError } from "../../errors/kiln-error.js";

/** pg_advisory_xact_lock key of the migrations ("kilnmig" as a number). */
const MIGRATION_LOCK = 0x6b696c6e6d6967;

export const MIGRATIONS: { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: "projects, deployments, branch heads, leases",
    sql: `
      CREATE TABLE projects (
        name text PRIMARY KEY,
        source text NOT NULL CHECK (source IN ('config', 'api')),
        github text NOT NULL,
        branch text NOT NULL,
        spec jsonb NOT NULL,
        updated timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX projects_push ON projects (lower(github), branch);

      -- One row per deployment; record is its kiln.v1.Deployment as proto3 JSON, the other
      -- columns are what queries select on.
      CREATE TABLE deployments (
        id text PRIMARY KEY,
        project text NOT NULL,
        commit text NOT NULL,
        before text NOT NULL DEFAULT '',
        trigger text NOT NULL,
        state smallint NOT NULL,
        delivery text,
        record jsonb NOT NULL
      );
      CREATE UNIQUE INDEX deployments_delivery ON deployments (delivery) WHERE delivery IS NOT NULL;
      CREATE INDEX deployments_project ON deployments (project, id DESC);
      CREATE INDEX deployments_open ON deployments (project, id) WHERE state IN (1, 2, 3);
      CREATE INDEX deployments_commit ON deployments (project, commit);
      CREATE INDEX deployments_before ON deployments (project, before) WHERE before <> '';

      -- The newest commit of each project's branch that a push delivered in order.
      CREATE TABLE branch_heads (
        project text PRIMARY KEY,
        commit text NOT NULL
      );

      -- Who drives each project's queue: renewed by the holder, taken over once expired.
      CREATE TABLE leases (
        project text PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL,
        expires timestamptz NOT NULL
      );
      CREATE INDEX leases_holder ON leases (holder);
    `,
  },
];

export async function migrate(pool: Pool, known = MIGRATIONS): Promise<{ applied: number[] }> {
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query("CREATE TABLE IF NOT EXISTS kiln_migrations (version integer PRIMARY KEY, name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())");
    const done = new Set((await client.query<{ version: number }>("SELECT version FROM kiln_migrations")).rows.map((r) => r.version));
    const newest = Math.max(0, ...known.map((m) => m.version));
    const ahead = [...done].filter((v) => v > newest);
    if (ahead.length) throw new KilnError("failed_precondition", `the database has schema version ${Math.max(...ahead)}, newer than this kiln-scheduler knows (${newest}): upgrade it`);
    for (const m of known) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      await client.query("INSERT INTO kiln_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      applied.push(m.version);
    }
    await client.query("COMMIT");
    return { applied };
  } catch (e) {
    await client.query("ROLLBACK").catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}
