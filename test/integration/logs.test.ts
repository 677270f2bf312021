// StreamLogs: live follow, replay after the build, resumption, many readers and a stalled one.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState, LogStream, Phase, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { stalledLogReader } from "../../bench/lib/stalled-reader.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const LINES = 5_000;

describe("build logs", () => {
  let dir: string, reg: TestRegistry, kilnd: TestKilnd, repo: TestRepo;

  before(async () => {
    dir = tempDir("logs");
    reg = await startRegistry(join(dir, "registry"));
    const base = pushBusyboxBase(reg.host);
    // A chatty build: 5,000 lines (about 600 kB as Connect JSON), more than a socket buffer holds.
    repo = makeRepo(join(dir, "repo"), {
      Containerfile: `FROM ${base}\nCOPY n.txt /n.txt\nRUN seq 1 ${LINES} | sed 's/^/log line number /; s/$/ padded out to make the log a little longer/'\n`,
      "n.txt": "1\n",
    });
    kilnd = await startKilnd({ data: join(dir, "data"), registry: reg.host });
  });
  after(async () => {
    if (process.env.KILN_TEST_DEBUG) console.log(kilnd?.output());
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const submit = async (n: string) => {
    const commit = repo.commit({ "n.txt": `${n}\n` });
    const { build } = await kilnd.client.build({
      project: "chatty",
      source: { kind: { case: "git", value: { url: repo.url, commit } } },
      image: `${reg.host}/test/chatty`,
    });
    return build!;
  };

  const collect = async (buildId: string, follow: boolean, afterSeq = 0n) => {
    const lines: Array<{ seq: bigint; text: string; stream: LogStream; phase: Phase }> = [];
    let final: Build | undefined;
    for await (const m of kilnd.client.streamLogs({ buildId, follow, afterSeq })) {
      if (m.event.case === "line") lines.push(m.event.value);
      else if (m.event.case === "build") final = m.event.value;
    }
    return { lines, final };
  };

  let chattyId: string;
  test("50 followers get every line live and the final record, while one reader never reads", async (t) => {
    const b = await submit("a");
    chattyId = b.id;
    const stalled = stalledLogReader(kilnd.port, b.id);
    const t0 = Date.now();
    const followers = await Promise.all(Array.from({ length: 50 }, () => collect(b.id, true)));
    t.diagnostic(`all 50 followers done after ${Date.now() - t0} ms`);
    const done = (await kilnd.client.getBuild({ buildId: b.id })).build!;
    assert.equal(done.state, BuildState.SUCCEEDED, done.error);
    const expected = followers[0]!.lines.length;
    for (const f of followers) {
      assert.equal(f.final?.state, BuildState.SUCCEEDED);
      assert.equal(f.lines.length, expected);
      assert.deepEqual(f.lines.map((l) => l.seq), Array.from({ length: expected }, (_, i) => BigInt(i + 1)), "numbered 1..n without gaps");
    }
    const texts = followers[0]!.lines.map((l) => l.text);
    assert.ok(texts.includes(`log line number ${LINES} padded out to make the log a little longer`));
    assert.ok(followers[0]!.lines.some((l) => l.stream === LogStream.SYSTEM && l.phase === Phase.FETCH));
    assert.ok(followers[0]!.lines.some((l) => l.stream === LogStream.STDOUT && l.phase === Phase.BUILD && l.text.startsWith("STEP 1/")));
    assert.ok(followers[0]!.lines.some((l) => l.phase === Phase.PUSH));
    stalled.destroy();
    // kilnd serves on after the stalled reader is dropped.
    assert.equal((await kilnd.client.getBuild({ buildId: b.id })).build!.id, b.id);
  });

  test("a reader that comes after the build gets the whole log from the volume, then the record", async () => {
    const live = await collect(chattyId, false);
    const late = await collect(chattyId, true);
    assert.ok(late.lines.length > LINES);
    assert.deepEqual(late.lines.map((l) => l.text), live.lines.map((l) => l.text));
    assert.equal(late.final?.state, BuildState.SUCCEEDED);
    assert.equal(late.final?.imageDigest, await reg.digest("test/chatty", late.final!.commit));
  });

  test("afterSeq resumes where a reader left off", async () => {
    const all = await collect(chattyId, false);
    const n = all.lines.length;
    const tail = await collect(chattyId, false, BigInt(n - 3));
    assert.deepEqual(tail.lines.map((l) => l.seq), [BigInt(n - 2), BigInt(n - 1), BigInt(n)]);
    const none = await collect(chattyId, true, BigInt(n + 10));
    assert.equal(none.lines.length, 0);
    assert.equal(none.final?.id, chattyId);
  });

  test("a follower that joins in the middle gets the replay, then the live tail, then the record", async () => {
    const b = await submit("b");
    // Join once some lines exist.
    for await (const m of kilnd.client.streamLogs({ buildId: b.id, follow: true })) if (m.event.case === "line" && m.event.value.text.startsWith("log line number 1 ")) break;
    const joined = await collect(b.id, true);
    assert.equal(joined.final?.state, BuildState.SUCCEEDED);
    assert.equal(joined.lines[0]!.seq, 1n);
    assert.ok(joined.lines.some((l) => l.text.startsWith(`log line number ${LINES} `)));
  });

  test("a step that prints a gigabyte without a newline: the line is cut, kilnd's memory stays bounded and it serves on", async (t) => {
    const rssBefore = rssKiB(kilnd.proc.pid!);
    const commit = repo.commit({
      Containerfile: `FROM ${pushBusyboxBase(reg.host)}\nCOPY n.txt /n.txt\nRUN head -c 1073741824 /dev/zero | tr '\\0' a; echo; echo after the flood\n`,
      "n.txt": "flood\n",
    });
    const b = await kilnd.buildCommit({ project: "flood", url: repo.url, commit, image: `${reg.host}/test/flood` });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const { lines } = await collect(b.id, false);
    const cut = lines.find((l) => l.text.startsWith("aaaa"));
    assert.ok(cut, "the long line is in the log");
    assert.match(cut.text, /^a{16384}… \(line cut at 16384 bytes; 1073725440 more bytes not kept\)$/);
    assert.ok(lines.some((l) => l.text === "after the flood"), "the lines after it are logged");
    const peak = peakRssKiB(kilnd.proc.pid!);
    t.diagnostic(`kilnd RSS before ${rssBefore} KiB, peak ${peak} KiB`);
    assert.ok(peak < 400 * 1024, `kilnd's peak RSS ${peak} KiB`);
    assert.equal((await kilnd.client.getInfo({})).version.length > 0, true, "kilnd serves on");
  });
});

const status = (pid: number, key: string) => Number(/\d+/.exec(readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith(key)) ?? "")?.[0]);
const rssKiB = (pid: number) => status(pid, "VmRSS:");
const peakRssKiB = (pid: number) => status(pid, "VmHWM:");
