// The scheduler's two stores (files, and a real PostgreSQL) agree on the queue's order: a
// project's deployments come out of open() in the order the store accepted them, whatever id or
// clock the submitting replica had. The load test found the other way round: a replica slow to
// answer made the older push's id after the newer one's, and the older push superseded it.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DeploymentSchema, DeploymentState, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { FileStore } from "../../src/scheduler/store/file-store.js";
import { PgStore } from "../../src/scheduler/store/pg-store.js";
import type { SchedulerStore } from "../../src/scheduler/store/store.js";
import { newId } from "../../src/util/ids.js";
import { createLogger } from "../../src/util/logger.js";
import { startPostgres, type TestPostgres } from "../helpers/postgres.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const logger = createLogger("silent");
const events = { work() {}, deployment() {}, resync() {} };
const sha = (c: string) => c.repeat(40);

/** A webhook push as the scheduler hands it to the store, with the id its replica's clock made. */
const push = (commit: string, beforeCommit: string, id: string, delivery: string): Deployment =>
  create(DeploymentSchema, { id, project: "app", commit, before: beforeCommit, trigger: "webhook", state: DeploymentState.QUEUED, delivery });

async function acceptedInOrder(store: SchedulerStore) {
  const now = Date.now();
  // Push 1 is accepted first but was given a later id (its replica answered slowly); push 2,
  // its successor, comes next with an earlier one, and push 3 from a replica whose clock is a
  // minute behind.
  const d1 = (await store.accept(push(sha("1"), sha("0"), newId(now + 5_000), "d1"))).deployment;
  const d2 = (await store.accept(push(sha("2"), sha("1"), newId(now), "d2"))).deployment;
  const d3 = (await store.accept(push(sha("3"), sha("2"), newId(now - 60_000), "d3"))).deployment;
  assert.ok(d1.id < d2.id && d2.id < d3.id, `ids in acceptance order: ${d1.id} ${d2.id} ${d3.id}`);
  assert.deepEqual(
    (await store.open("app")).map((d) => d.commit),
    [sha("1"), sha("2"), sha("3")],
  );
  assert.deepEqual(
    (await store.list("app", 0)).map((d) => d.commit),
    [sha("3"), sha("2"), sha("1")],
  );
  // The same delivery again is the same deployment, id and all.
  const again = await store.accept(push(sha("2"), sha("1"), newId(), "d2"));
  assert.equal(again.duplicate, true);
  assert.equal(again.deployment.id, d2.id);
  // Older than the head: recorded SUPERSEDED by the newest push, never queued.
  const stale = (await store.accept(push(sha("1"), sha("0"), newId(now + 600_000), "d1-again"))).deployment;
  assert.equal(stale.state, DeploymentState.SUPERSEDED);
  assert.equal(stale.supersededBy, d2.id);
  assert.ok(stale.id > d3.id);
}

describe("scheduler stores: the queue's order", () => {
  let dir: string;
  let pgs: TestPostgres;
  before(async () => {
    dir = tempDir("stores");
    pgs = await startPostgres();
  });
  after(() => {
    pgs?.stop();
    removeTree(dir);
  });

  test("file store: open() is the acceptance order, and so after a restart", async () => {
    const data = join(dir, "files");
    const store = new FileStore(data, logger);
    await store.start(events);
    await acceptedInOrder(store);
    await store.close();
    const reloaded = new FileStore(data, logger);
    await reloaded.start(events);
    const d4 = (await reloaded.accept(push(sha("4"), sha("3"), newId(Date.now() - 3_600_000), "d4"))).deployment;
    const open = await reloaded.open("app");
    assert.deepEqual(open.map((d) => d.commit), [sha("1"), sha("2"), sha("3"), sha("4")]);
    assert.equal(open.at(-1)!.id, d4.id);
    await reloaded.close();
  });

  test("PostgreSQL store: open() is the acceptance order, across two replicas' stores", async () => {
    const url = await pgs.database("order");
    const a = new PgStore(url, logger, 3);
    const b = new PgStore(url, logger, 3);
    await Promise.all([a.start(events), b.start(events)]);
    try {
      await acceptedInOrder(a);
      // Another replica's accept sorts after what this one accepted.
      const d4 = (await b.accept(push(sha("4"), sha("3"), newId(Date.now() - 3_600_000), "d4"))).deployment;
      assert.deepEqual(
        (await a.open("app")).map((d) => d.commit),
        [sha("1"), sha("2"), sha("3"), sha("4")],
      );
      assert.equal((await a.open("app")).at(-1)!.id, d4.id);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
