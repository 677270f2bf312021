// Build logs: numbering, fan-out to readers at their own pace, replay from the volume.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { LogStream, Phase } from "../../src/gen/kiln/v1/builder_pb.js";
import { LogStore } from "../../src/logs/log-store.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const drain = async (it: AsyncIterable<{ seq: number; text: string }>) => {
  const out: string[] = [];
  for await (const e of it) out.push(`${e.seq}:${e.text}`);
  return out;
};

describe("build log", () => {
  const dir = tempDir("log");
  after(() => removeTree(dir));

  test("readers that join early, late, or never read: the writer never waits for any of them", async () => {
    const store = new LogStore(dir);
    const log = store.open("b1");
    log.append("one", LogStream.STDOUT, Phase.FETCH);
    const early = drain(store.read("b1", 0, true));
    const stalled = store.read("b1", 0, true);
    await stalled.next(); // takes one line, then never another
    for (let i = 2; i <= 10_000; i++) log.append(`line ${i}`, LogStream.STDOUT, Phase.BUILD);
    const middle = drain(store.read("b1", 9_990, true));
    await store.finish("b1");
    const lines = await early;
    assert.equal(lines.length, 10_000);
    assert.equal(lines[0], "1:one");
    assert.equal(lines[9_999], "10000:line 10000");
    assert.deepEqual(await middle, Array.from({ length: 10 }, (_, i) => `${9_991 + i}:line ${9_991 + i}`));
    assert.equal(store.activeReaders, 1, "only the stalled reader is still open");
    await stalled.return(undefined);
    assert.equal(store.activeReaders, 0);
  });

  test("a finished log is replayed from the volume, also after afterSeq", async () => {
    const store = new LogStore(dir);
    assert.equal((await drain(store.read("b1", 0, true))).length, 10_000);
    assert.deepEqual(await drain(store.read("b1", 9_998, false)), ["9999:line 9999", "10000:line 10000"]);
    assert.deepEqual(await drain(store.read("unknown", 0, true)), []);
  });

  test("a follower stops when its signal aborts", async () => {
    const store = new LogStore(dir);
    const log = store.open("b2");
    log.append("x", LogStream.SYSTEM, Phase.FETCH);
    const ac = new AbortController();
    const reading = drain(store.read("b2", 0, true, ac.signal));
    setImmediate(() => ac.abort());
    assert.deepEqual(await reading, ["1:x"]);
    await store.finish("b2");
  });
});
