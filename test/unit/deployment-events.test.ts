// FollowDeployment's fan-out: a follower's position is taken when it asks, the end always
// arrives, a stalled follower holds a bounded window, and it is told what it missed.
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { describe, test } from "node:test";
import { LogLineSchema } from "../../src/gen/kiln/v1/builder_pb.js";
import { DeploymentSchema, DeploymentState } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { DeploymentEvents, type DeploymentEvent } from "../../src/scheduler/deployment-events.js";

const dep = (state: DeploymentState) => create(DeploymentSchema, { id: "d1", state });
const line = (text: string) => ({ case: "line" as const, value: create(LogLineSchema, { text }) });
const drain = async (it: AsyncIterable<DeploymentEvent>) => {
  const out: string[] = [];
  for await (const e of it) out.push(e.case === "line" ? e.value.text : DeploymentState[e.value.state]!);
  return out;
};

describe("deployment events", () => {
  test("everything emitted after follow() is called reaches the follower, the final state included, though it pulls only later", async () => {
    const ev = new DeploymentEvents();
    const f = ev.follow("d1", new AbortController().signal);
    ev.emit("d1", { case: "deployment", value: dep(DeploymentState.BUILDING) });
    ev.emit("d1", line("step 1"));
    ev.emit("d1", { case: "deployment", value: dep(DeploymentState.SUCCEEDED) });
    assert.deepEqual(await drain(f), ["BUILDING", "step 1", "SUCCEEDED"]);
  });

  test("a follower reads each state as it was when emitted, though the worker changed its record since", async () => {
    const ev = new DeploymentEvents();
    const f = ev.follow("d1", new AbortController().signal);
    const record = dep(DeploymentState.WAKING);
    ev.emit("d1", { case: "deployment", value: record });
    record.state = DeploymentState.SUCCEEDED;
    ev.emit("d1", { case: "deployment", value: record });
    assert.deepEqual(await drain(f), ["WAKING", "SUCCEEDED"]);
  });

  test("a stalled follower costs a bounded window and is told how many it missed; a late change of an ended deployment makes no feed", async () => {
    const ev = new DeploymentEvents();
    let missed = 0;
    const f = ev.follow("d1", new AbortController().signal, (n) => (missed += n));
    for (let i = 0; i < 25_000; i++) ev.emit("d1", line(`line ${i}`));
    ev.emit("d1", { case: "deployment", value: dep(DeploymentState.FAILED) });
    const got = await drain(f);
    assert.equal(got.at(-1), "FAILED");
    assert.equal(missed + got.length, 25_001);
    assert.ok(got.length <= 10_000, `${got.length} kept`);
    ev.emit("d1", { case: "deployment", value: dep(DeploymentState.FAILED) });
    assert.equal(ev.live, 0);
  });
});
