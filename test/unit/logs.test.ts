// Build logs: numbering, fan-out to readers at their own pace, replay from the volume.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { LogStream, Phase } from "../../src/gen/kiln/v1/builder_pb.js";
import { Feed } from "../../src/fanout/feed.js";
import { LogStore } from "../../src/logs/log-store.js";
import { LineSplitter } from "../../src/process/lines.js";
import { createMasker } from "../../src/secrets/masker.js";
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

describe("a build's output as lines", () => {
  const split = (chunks: (string | Buffer)[], max = 16) => {
    const out: string[] = [];
    const s = new LineSplitter(max, (t, dropped) => out.push(dropped ? `${t}|cut ${dropped}` : t));
    for (const c of chunks) s.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
    s.end();
    return out;
  };

  test("lines across chunks, a last line without a newline, CRLF", () => {
    assert.deepEqual(split(["ab", "c\nde", "f\r\n", "\n", "tail"]), ["abc", "def", "", "tail"]);
  });

  test("a progress line rewritten with \\r keeps what it finally says, also when the \\r ends a chunk", () => {
    assert.deepEqual(split(["10%\r20%\r", "30%\n", "x\r"]), ["30%", "x"]);
  });

  test("a line longer than the cut is cut as it grows, and what follows is counted, not kept", () => {
    assert.deepEqual(split(["0123456789", "abcdefghij", "klm\nnext\n"]), ["0123456789abcdef|cut 7", "next"]);
  });

  test("a cut inside a multi-byte character does not leave half of it", () => {
    const out = split([Buffer.from("abcdefghijklmno€€\n")]);
    assert.deepEqual(out, ["abcdefghijklmno|cut 5"]);
  });

  test("a gigabyte without a newline costs the cut, not the gigabyte", () => {
    let held = 0;
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    const out: string[] = [];
    const s = new LineSplitter(16 * 1024, (t, dropped) => out.push(`${t.length}+${dropped}`));
    const before = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 1024; i++) {
      s.push(chunk);
      held = Math.max(held, process.memoryUsage().arrayBuffers - before);
    }
    s.end();
    assert.deepEqual(out, [`${16 * 1024}+${1024 * 1024 * 1024 - 16 * 1024}`]);
    assert.ok(held < 64 * 1024 * 1024, `held ${held} bytes`);
  });
});

describe("the fan-out feed", () => {
  const feedOf = (maxEntries: number, older?: (after: number) => AsyncIterable<{ seq: number }>) =>
    new Feed<{ seq: number }>({ maxEntries, ...(older ? { older } : {}) });
  const seqs = async (it: AsyncIterable<{ seq: number }>) => {
    const out: number[] = [];
    for await (const e of it) out.push(e.seq);
    return out;
  };

  test("a reader's position is taken when it asks, not at its first pull", async () => {
    const f = feedOf(100);
    f.append((seq) => ({ seq }));
    const r = f.read(f.lastSeq, { follow: true });
    f.append((seq) => ({ seq }));
    f.close();
    assert.deepEqual(await seqs(r), [2]);
  });

  test("memory keeps a bounded window; a reader behind it goes on from `older`, in order, without repeats", async () => {
    const all = Array.from({ length: 1000 }, (_, i) => ({ seq: i + 1 }));
    const f = feedOf(10, async function* (after) {
      for (const e of all) if (e.seq > after) yield e;
    });
    const stalled = f.read(0, { follow: true });
    f.append(() => all[0]!);
    assert.deepEqual((await stalled.next()).value, { seq: 1 });
    for (const e of all.slice(1)) f.append(() => e);
    assert.equal(f.inMemory, 10);
    f.close();
    assert.deepEqual(await seqs(stalled), all.slice(1).map((e) => e.seq));
  });

  test("with nothing beyond memory, a reader that fell behind is told how many it missed", async () => {
    const f = feedOf(5);
    for (let i = 0; i < 20; i++) f.append((seq) => ({ seq }));
    f.close();
    let missed = 0;
    const got = await seqs(f.read(3, { follow: true, onGap: (n) => (missed += n) }));
    assert.deepEqual(got, [16, 17, 18, 19, 20]);
    assert.equal(missed, 12);
  });
});

describe("a build log's bounds", () => {
  const dir = tempDir("log-bounds");
  after(() => removeTree(dir));

  test("a flood of lines keeps a bounded window in memory; every line is still read back in order", async () => {
    const store = new LogStore(dir, { memoryLines: 100, memoryChars: 10_000, maxFileBytes: 1 << 30 });
    const log = store.open("flood");
    const stalled = store.read("flood", 0, true);
    log.append("line 1", LogStream.STDOUT, Phase.BUILD);
    assert.equal((await stalled.next()).value?.text, "line 1");
    for (let i = 2; i <= 50_000; i++) log.append(`line ${i}`, LogStream.STDOUT, Phase.BUILD);
    assert.ok(log.inMemory <= 100, `${log.inMemory} lines in memory`);
    const late = store.read("flood", 30_000, true);
    await store.finish("flood");
    const rest = await drain(stalled);
    assert.equal(rest.length, 49_999);
    rest.forEach((l, i) => assert.equal(l, `${i + 2}:line ${i + 2}`));
    const tail = await drain(late);
    assert.equal(tail.length, 20_000);
    assert.equal(tail[0], "30001:line 30001");
  });

  test("past its byte limit a log counts its lines instead of keeping them, and says so at its end", async () => {
    const store = new LogStore(dir, { memoryLines: 100, memoryChars: 10_000, maxFileBytes: 10_000 });
    const log = store.open("capped");
    for (let i = 1; i <= 1000; i++) log.append(`line ${i}`, LogStream.STDOUT, Phase.BUILD);
    await store.finish("capped");
    const lines = await drain(store.read("capped", 0, false));
    const kept = lines.length - 1;
    assert.ok(kept > 100 && kept < 1000, `${kept} lines kept`);
    assert.match(lines.at(-1)!, new RegExp(`^${kept + 1}:log: ${1000 - kept} more lines \\(\\d+ bytes\\) were not kept: one build's log is limited to 10000 bytes$`));
    const { size } = await import("node:fs/promises").then((fs) => fs.stat(store.pathOf("capped")));
    assert.ok(size <= 10_000 + 300, `${size} bytes on disk`);
  });
});

describe("masking a cut line", () => {
  test("the start of a secret the cut split is masked too", () => {
    const m = createMasker(["s3cr3t-value-123"]);
    assert.equal(m.maskCut("build output s3cr3t-va"), "build output ***");
    assert.equal(m.maskCut("a s3cr3t-value-123 b s3c"), "a *** b ***");
    assert.equal(m.maskCut("nothing here"), "nothing here");
  });
});
