// Multi-stage Containerfiles on a kilnd that keeps one build per project: every stage's layer
// cache survives the prune that follows each build (a dependency stage with a cache mount is
// not run again for a source change), and steps of every stage are counted. The kilnd runs
// without the fast path, which would take these source changes (fast-path.test.ts holds this
// Containerfile's shape to the full build: the "stage-file" app).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { kilndPodmanEnv } from "../helpers/leftovers.js";
import { logLines } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const app = (base: string) => ({
  Containerfile: [
    `FROM ${base} AS deps`,
    "WORKDIR /deps",
    "COPY deps.txt ./",
    'RUN --mount=type=cache,target=/cache echo "ran-install" && cat deps.txt > /cache/seen && cp deps.txt installed.txt',
    `FROM ${base} AS build`,
    "WORKDIR /src",
    "COPY --from=deps /deps/installed.txt ./",
    "COPY src/ ./src/",
    "RUN cat installed.txt src/*.txt > bundle.txt",
    `FROM ${base}`,
    "COPY --from=build /src/bundle.txt /app/bundle.txt",
    'CMD ["cat", "/app/bundle.txt"]',
    "",
  ].join("\n"),
  "deps.txt": "left-pad 1\n",
  "src/a.txt": "hello 0\n",
});

describe("multi-stage builds", () => {
  let dir: string, reg: TestRegistry, base: string, k: TestKilnd, repo: TestRepo;
  before(async () => {
    dir = tempDir("multistage");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), app(base));
    k = await startKilnd({ data: join(dir, "data"), registry: reg.host, args: ["--keep-builds", "1", "--fast-path", "off"] });
  });
  after(async () => {
    await k?.stop();
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  const build = async (commit: string) => {
    const done = await k.buildCommit({ project: "multi", url: repo.url, commit, image: `${reg.host}/test/multi` });
    // The Prune call waits for the prune that follows the build (the keeper runs them one at a time).
    await k.client.prune({ project: "multi" });
    return { b: done, log: await logLines(k, done.id) };
  };

  test("the first build runs every stage; steps of all three stages are counted", async () => {
    const { b, log } = await build(repo.head());
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.ok(log.includes("ran-install"));
    assert.equal(b.stepsTotal, 9, "3 + 4 + 2 steps, FROM lines and kiln's label step not counted");
    assert.equal(b.stepsCached, 0);
  });

  test("five one-line changes with --keep-builds 1: the dependency stage comes from the cache every time", async () => {
    for (let i = 1; i <= 5; i++) {
      const { b, log } = await build(repo.commit({ "src/a.txt": `hello ${i}\n` }));
      assert.equal(b.state, BuildState.SUCCEEDED, b.error);
      assert.ok(!log.includes("ran-install"), `change ${i}: the install step ran again:\n${log.join("\n")}`);
      assert.equal(b.stepsTotal, 9);
      assert.equal(b.stepsCached, 5, `change ${i}: deps (3), build's WORKDIR and COPY --from (2) from the cache`);
    }
    const storage = await k.client.getStorage({});
    assert.equal(storage.kilnImages, 1, "the keep policy still keeps one build");
  });

  test("what belongs to no kept build goes: only the newest build's stage tags are left", () => {
    const out = execFileSync("podman", ["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=localhost/kiln-stage/*"], { env: kilndPodmanEnv(join(dir, "data")), encoding: "utf8" });
    const tags = out.trim().split("\n").filter(Boolean);
    assert.equal(tags.length, 2, `two earlier stages of one build: ${tags.join(", ")}`);
    assert.deepEqual([...new Set(tags.map((t) => t.replace(/-\d+$/, "")))], [`localhost/kiln-stage/multi:${repo.head()}`], "both of the newest build, named by its commit");
    // Each tag is on its stage's last image (the one a later build's cache needs), though the
    // build stage ran while the final stage's COPY --from waited, and printed its image in between.
    const lastStep = (tag: string) =>
      execFileSync("podman", ["image", "inspect", "--format", "{{range .History}}{{.CreatedBy}}\n{{end}}", tag], { env: kilndPodmanEnv(join(dir, "data")), encoding: "utf8" })
        .trim()
        .split("\n")
        .at(-1);
    assert.match(lastStep(tags.find((t) => t.endsWith("-1"))!) ?? "", /cp deps\.txt installed\.txt/);
    assert.match(lastStep(tags.find((t) => t.endsWith("-2"))!) ?? "", /cat installed\.txt src\/\*\.txt > bundle\.txt/);
  });

  test("a change to the dependency file runs the dependency stage again", async () => {
    const { b, log } = await build(repo.commit({ "deps.txt": "left-pad 2\n" }));
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.ok(log.includes("ran-install"));
  });
});
