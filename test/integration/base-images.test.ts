// Base tags are looked up on every build, as BuildKit does: a patched base pushed under the same
// tag is built on by the next build (the fast path steps aside, saying so), the record lists
// each FROM and the digest it resolved to, and the fast path resumes on the new base.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase, pushPatchedBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { viewImage } from "../helpers/image-fs.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { logText } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

describe("base images resolved on every build", () => {
  let dir: string, reg: TestRegistry, base: string, k: TestKilnd, repo: TestRepo;
  before(async () => {
    dir = tempDir("bases");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    // The FROM goes through an ARG, as real Containerfiles often do.
    repo = makeRepo(join(dir, "repo"), { Containerfile: `ARG BASE=${base}\nFROM \${BASE}\nCOPY src/ /src/\n`, "src/a.txt": "a\n" });
    k = await startKilnd({ data: join(dir, "data"), registry: reg.host });
  });
  after(async () => {
    await k?.stop();
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  const build = async (commit: string) => {
    const done = await k.buildCommit({ project: "bases", url: repo.url, commit, image: `${reg.host}/test/bases` });
    assert.equal(done.state, BuildState.SUCCEEDED, done.error);
    return done;
  };
  const hasPatch = async (commit: string) => (await viewImage(reg.host, "test/bases", commit)).files.has("patched");
  const baseDigest = () => reg.digest("base/busybox", "1");

  test("the record lists the FROM image and the digest it resolved to; a warm build takes the fast path", async () => {
    const first = await build(repo.head());
    assert.deepEqual(first.baseImages.map((b) => [b.reference, b.digest]), [[base, await baseDigest()]]);
    const warm = await build(repo.commit({ "src/a.txt": "b\n" }));
    assert.equal(warm.fastPath, true);
  });

  test("a patched base under the same tag: the next build is built on it (the fast path steps aside; the base is new to storage, so it is kiln's first build), then the fast path resumes", async () => {
    const before = await baseDigest();
    pushPatchedBase(base, reg.host, "patched once");
    const after = await baseDigest();
    assert.notEqual(after, before);
    const moved = await build(repo.commit({ "src/a.txt": "c\n" }));
    const log = await logText(k, moved.id);
    assert.match(log, /fast path: not taken: the base image .* moved/);
    assert.match(log, /first build: .* is new to storage/);
    assert.equal(moved.fastPath, true, log);
    assert.deepEqual(moved.baseImages.map((b) => b.digest), [after]);
    assert.ok(await hasPatch(moved.commit), "the image is built on the patched base");
    const warm = await build(repo.commit({ "src/a.txt": "d\n" }));
    assert.equal(warm.fastPath, true, await logText(k, warm.id));
    assert.ok(await hasPatch(warm.commit), "the fast path's image is on the patched base too");
  });

  test("a digest-pinned FROM needs no look-up and is recorded as pinned", async () => {
    const pinned = `${base}@${await baseDigest()}`;
    const b = await build(repo.commit({ Containerfile: `FROM ${pinned}\nCOPY src/ /src/\n` }));
    assert.deepEqual(b.baseImages.map((x) => x.reference), [pinned]);
  });
});
