// A real PostgreSQL 15 for tests, started by scripts/postgres.sh (the script the demo and the
// bench use) on a directory and free port of the test's own; each test gets a fresh database.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "./wait.js";

const SCRIPT = new URL("../../scripts/postgres.sh", import.meta.url).pathname;

export interface TestPostgres {
  /** postgres:// URL of the server's postgres database. */
  url: string;
  /** Makes an empty database and answers its URL. */
  database(prefix?: string): Promise<string>;
  stop(): void;
}

/** The server's directory is its own (the postgres user must reach it; a test's temporary directory is private). */
export async function startPostgres(): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), "kiln-pg-"));
  chmodSync(dir, 0o711);
  const port = await freePort();
  // fsync off: a test server, thrown away after the run (the durability tested is the scheduler's, not the disk's).
  const url = execFileSync(SCRIPT, ["start", dir, String(port)], { encoding: "utf8", env: { ...process.env, KILN_PG_FSYNC: "off" } }).trim();
  return {
    url,
    async database(prefix = "kiln") {
      const name = `${prefix}_${randomBytes(4).toString("hex")}`;
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return url.replace(/\/postgres$/, `/${name}`);
    },
    stop() {
      execFileSync(SCRIPT, ["stop", dir], { stdio: "ignore" });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
