// The kiln command line against a real kilnd.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const ROOT = new URL("../..", import.meta.url).pathname;

describe("kiln CLI", () => {
  let dir: string, reg: TestRegistry, base: string, kilnd: TestKilnd, repo: TestRepo;

  before(async () => {
    dir = tempDir("cli");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), helloApp(base));
    kilnd = await startKilnd({ data: join(dir, "data"), registry: reg.host });
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const kiln = (...args: string[]) => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "src/bin/kiln.ts", "--addr", kilnd.addr, ...args], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const buildArgs = (commit: string) => ["build", "--project", "cli", "--git", repo.url, "--commit", commit, "--image", `${reg.host}/test/cli`];

  let id = "";
  test("build --follow prints the live log and a summary line, and exits 0 on success", async () => {
    const sha = repo.head();
    const r = kiln(...buildArgs(sha), "--follow");
    assert.equal(r.code, 0, r.err + r.out);
    assert.match(r.out, /^STEP 1\/\d+: FROM /m);
    const summary = r.out.trim().split("\n").at(-1)!;
    const digest = await reg.digest("test/cli", sha);
    assert.ok(summary.startsWith("SUCCEEDED "), summary);
    assert.ok(summary.includes(`${reg.host}/test/cli:${sha}@${digest}`), summary);
    assert.match(summary, /in \d+\.\d\d s \(fetch .*build .*push .*\)\s+0\/6 steps cached/);
    id = summary.split(/\s+/)[1]!;
  });

  test("get, list and logs", () => {
    const g = kiln("get", id, "--json");
    assert.equal(g.code, 0, g.err);
    assert.equal(JSON.parse(g.out).state, "BUILD_STATE_SUCCEEDED");
    const l = kiln("list", "--project", "cli");
    assert.equal(l.code, 0, l.err);
    assert.match(l.out, new RegExp(`^${id}\\s+cli\\s+succeeded\\s+`, "m"));
    const logs = kiln("logs", id);
    assert.equal(logs.code, 0, logs.err);
    assert.match(logs.out, /^Successfully tagged /m);
    assert.match(logs.err, /^SUCCEEDED /m);
    // Both streams into one pipe, as a terminal or `2>&1` shows them: the summary is a line of its own, last.
    const both = spawnSync("sh", ["-c", `"${process.execPath}" --import tsx src/bin/kiln.ts --addr ${kilnd.addr} logs ${id} 2>&1`], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    const lines = both.stdout.split("\n");
    assert.equal(lines.at(-1), "", "the output ends with a newline");
    assert.match(lines.at(-2)!, /^SUCCEEDED /, "the summary is the last line, alone");
    assert.ok(lines.slice(0, -2).every((l) => !/SUCCEEDED .* steps cached/.test(l)), "no log line has the summary glued to it");
  });

  test("a failing build exits 1; a detached build prints its id; cancel prints the record", () => {
    const bad = repo.commit({ Containerfile: `FROM ${base}\nRUN exit 7\n` });
    const r = kiln(...buildArgs(bad));
    assert.equal(r.code, 1);
    assert.match(r.out, /^FAILED .*error: (buildah bud|podman build) failed/m);
    const slow = repo.commit({ Containerfile: `FROM ${base}\nRUN sleep 301\n` });
    const d = kiln(...buildArgs(slow), "--detach");
    assert.equal(d.code, 0, d.err);
    const c = kiln("cancel", d.out.trim());
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /^CANCELLED /);
  });

  test("storage and prune", () => {
    const s = kiln("storage");
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /^volume .*% used of \d+ MiB/m);
    assert.match(s.out, /^overlay  (native|not checked yet)$/m);
    const p = kiln("prune", "--dry-run");
    assert.equal(p.code, 0, p.err);
    assert.match(p.out, /^0 images would be removed$/m);
  });

  test("bad usage exits 2, an API error 3", () => {
    assert.equal(kiln("build", "--bogus").code, 2);
    assert.equal(kiln("frobnicate").code, 2);
    const nf = kiln("get", "no-such-build");
    assert.equal(nf.code, 3);
    assert.match(nf.err, /NotFound: build_id: no build "no-such-build"/);
    const bad = kiln("build", "--project", "x/y", "--git", repo.url, "--commit", repo.head());
    assert.equal(bad.code, 3);
    assert.match(bad.err, /InvalidArgument: project:/);
  });
});
