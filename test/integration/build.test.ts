// Real builds: podman, a real registry, real git repositories.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildState, CommitRelation } from "../../src/gen/kiln/v1/builder_pb.js";
import { helloApp } from "../helpers/apps.js";
import { pullIntoKilnd, pushBusyboxBase } from "../helpers/base-image.js";
import { serveGitHttp } from "../helpers/git-http.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { containerMountsUnder, kilndPodmanEnv, workingContainers } from "../helpers/leftovers.js";
import { logLines } from "../helpers/logs.js";
import { viewImage } from "../helpers/image-fs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

describe("builds", () => {
  let dir: string, reg: TestRegistry, base: string, kilnd: TestKilnd, repo: TestRepo;
  const data = () => join(dir, "data");

  before(async () => {
    dir = tempDir("build");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), helloApp(base));
    kilnd = await startKilnd({ data: data(), registry: reg.host });
    // These tests are about the full build and buildah's layer cache: the base is in storage already (no first build).
    pullIntoKilnd(data(), base);
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const build = async (commit: string, extra: Record<string, unknown> = {}) => {
    const { build: b } = await kilnd.client.build({
      project: "hello",
      source: { kind: { case: "git", value: { url: repo.url, commit } } },
      image: `${reg.host}/test/hello`,
      ...extra,
    });
    assert.ok(b?.id);
    return kilnd.waitDone(b.id);
  };

  const podmanEnv = () => kilndPodmanEnv(data());

  let first: string;
  test("a commit is built, tagged with its SHA, pushed, and the digest is the registry's", async () => {
    first = repo.head();
    const b = await build(first);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(b.image, `${reg.host}/test/hello:${first}`);
    assert.equal(b.commit, first);
    assert.ok(b.pushed);
    assert.match(b.imageDigest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(b.imageDigest, await reg.digest("test/hello", first));
    assert.equal(await reg.digest("test/hello", "latest"), undefined, "never tagged latest");
    assert.equal(b.stepsTotal, 6);
    assert.equal(b.stepsCached, 0);
    assert.ok(b.durations?.fetch && b.durations.build && b.durations.push && b.durations.total);
    assert.ok(b.createTime && b.startTime && b.finishTime);
  });

  test("the image carries kiln's labels and the OCI labels", () => {
    const out = execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${reg.host}/test/hello:${first}`], { encoding: "utf8" });
    const labels = (JSON.parse(out) as { Labels: Record<string, string> }).Labels;
    assert.equal(labels["kiln.managed"], "true");
    assert.equal(labels["kiln.project"], "hello");
    assert.equal(labels["org.opencontainers.image.revision"], first);
    assert.equal(labels["org.opencontainers.image.source"], repo.url);
    assert.equal(labels["org.opencontainers.image.created"], repo.committed(first), "the commit's time, not the build's");
    assert.deepEqual(Object.keys(labels).filter((k) => k.startsWith("kiln.")).sort(), ["kiln.managed", "kiln.project"], "nothing of the build's own");
  });

  test("images are in Docker format by default: HEALTHCHECK, SHELL and ONBUILD are kept", async () => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nSHELL ["/bin/sh", "-ec"]\nHEALTHCHECK --interval=30s CMD ["true"]\nONBUILD RUN echo child\nCOPY src/ /src/\n` });
    const b = await build(sha);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const r = await fetch(`http://${reg.host}/v2/test/hello/manifests/${sha}`, { headers: { accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json" } });
    assert.equal(r.headers.get("content-type"), "application/vnd.docker.distribution.manifest.v2+json");
    const config = (await viewImage(reg.host, "test/hello", sha)).config.config as { Healthcheck?: { Test: string[] }; Shell?: string[]; OnBuild?: string[] };
    assert.deepEqual(config.Healthcheck?.Test, ["CMD", "true"]);
    assert.deepEqual(config.Shell, ["/bin/sh", "-ec"]);
    assert.deepEqual(config.OnBuild, ["RUN echo child"]);
    repo.commit(helloApp(base));
  });

  test("kiln's LABEL step comes before the final stage's trailing metadata steps, and the config is the Containerfile's", async () => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nCOPY src/ /src/\nLABEL team=infra\nENV A=1\nUSER 1000\nCMD ["cat", "/src/a.txt"]\n` });
    const b = await build(sha);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const { config } = await viewImage(reg.host, "test/hello", sha);
    const steps = (config.history ?? []).map((h) => (h.created_by ?? "").replace(/^.*#\(nop\) /, "").split(" ")[0]).slice(-5);
    assert.deepEqual(steps, ["LABEL", "LABEL", "ENV", "USER", "CMD"]);
    assert.match(config.history?.at(-4)?.created_by ?? "", /LABEL "kiln\.managed"="true"/, "kiln's, after the user's own LABEL");
    const c = config.config as { Labels?: Record<string, string>; User?: string; Env?: string[]; Cmd?: string[] };
    assert.equal(c.Labels?.team, "infra");
    assert.equal(c.Labels?.["org.opencontainers.image.revision"], sha);
    assert.equal(c.User, "1000");
    assert.ok(c.Env?.includes("A=1"));
    assert.deepEqual(c.Cmd, ["cat", "/src/a.txt"]);
    assert.equal(b.stepsTotal, 5, "kiln's label step is not counted");
    repo.commit(helloApp(base));
  });

  test("the pushed image runs and holds the commit's content", () => {
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/test/hello:${first}`], { env: podmanEnv(), encoding: "utf8" });
    assert.equal(out, "hello from kiln's tests\n");
  });

  test("a second commit rebuilds from the changed step on; the steps before it come from cache", async () => {
    const sha = repo.commit({ "src/a.txt": "changed\n" });
    const b = await build(sha);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    // WORKDIR, COPY static/, RUN echo: cached. COPY src/ (changed), RUN cat, CMD: built.
    assert.equal(b.stepsTotal, 6);
    assert.equal(b.stepsCached, 3);
    assert.equal(b.imageDigest, await reg.digest("test/hello", sha));
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/test/hello:${sha}`], { env: podmanEnv(), encoding: "utf8" });
    assert.equal(out, "changed\n");
  });

  test("the same commit again comes wholly from cache", async () => {
    const b = await build(repo.head());
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(b.stepsCached, 6);
  });

  test("deleted, added and mode-changed files reach the build context", async () => {
    const sha = repo.commit({
      "static/info.txt": null,
      "static/new.txt": "new\n",
      "src/run.sh": { content: "#!/bin/sh\necho run\n", mode: 0o755 },
    });
    const b = await build(sha);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/test/hello:${sha}`, "sh", "-c", "ls /app/static; /app/src/run.sh"], { env: podmanEnv(), encoding: "utf8" });
    assert.equal(out, "new.txt\nrun\n");
  });

  test("the checkout is updated in place: a file the commit did not change is not written again", async () => {
    const file = join(data(), "work", "hello", "src", "a.txt");
    const before = statSync(file);
    const b = await build(repo.commit({ "static/new.txt": "newer\n" }));
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const after = statSync(file);
    assert.equal(after.ino, before.ino, "the same file");
    assert.equal(after.mtimeMs, before.mtimeMs, "not rewritten");
  });

  test("build args, a target stage that is not the last, a Containerfile in a subdirectory", async () => {
    const sha = repo.commit({
      "deploy/multi.Containerfile": `ARG BASE\nFROM \${BASE} AS app\nARG GREETING\nRUN echo "$GREETING" > /greeting\nFROM app AS extra\nRUN echo extra > /extra\n`,
    });
    const b = await build(sha, { containerfile: "deploy/multi.Containerfile", target: "app", buildArgs: { BASE: base, GREETING: "hi there" } });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/test/hello:${sha}`, "sh", "-c", "cat /greeting; ls /extra 2>&1 || true"], { env: podmanEnv(), encoding: "utf8" });
    assert.match(out, /^hi there\n.*No such file/s);
    const labels = JSON.parse(execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${reg.host}/test/hello:${sha}`], { encoding: "utf8" })).Labels;
    assert.equal(labels["kiln.project"], "hello");
    assert.equal(b.stepsTotal, 2, "ARG and RUN of stage app; kiln's label steps are not counted");
  });

  test("an image without a registry host is built and not pushed", async () => {
    const b = await build(repo.head(), { image: "localhost/local/only" });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(b.pushed, false);
    assert.equal(b.imageDigest, "");
    assert.equal(b.image, `localhost/local/only:${repo.head()}`);
    // And a build FROM that local image: no registry to look it up at, storage has it.
    const sha = repo.commit({ Containerfile: `FROM localhost/local/only:${repo.head()}\nRUN echo on-a-local-base\n` });
    const onLocal = await build(sha, { image: "localhost/local/on-local" });
    assert.equal(onLocal.state, BuildState.SUCCEEDED, onLocal.error);
    assert.deepEqual(onLocal.baseImages, [], "a local image has no registry digest");
    repo.commit(helloApp(base));
  });

  test("a failing RUN step ends the build FAILED with podman's error, and kilnd carries on", async () => {
    const sha = repo.commit({ Containerfile: `FROM ${base}\nRUN echo about to fail && echo npm ERR! missing script && exit 3\n` });
    const b = await build(sha);
    assert.equal(b.state, BuildState.FAILED);
    assert.match(b.error, /(buildah bud|podman build) failed/);
    assert.match(b.error, /the step's last output: about to fail \| npm ERR! missing script$/, "the record's error ends with the failing step's output");
    const lines = await logLines(kilnd, b.id);
    assert.ok(lines.includes("about to fail"));
    // The sweep after a failed build runs before the build is done.
    assert.deepEqual(workingContainers(data()), [], "no working container is left behind");
    assert.deepEqual(containerMountsUnder(join(data(), "storage")), [], "no container's filesystem stays mounted");
    const ok = await build(repo.commit(helloApp(base)));
    assert.equal(ok.state, BuildState.SUCCEEDED, ok.error);
  });

  test("RUN --mount=type=cache keeps its contents from one build to the next", async () => {
    const cf = `FROM ${base}\nCOPY src/ /src/\nRUN --mount=type=cache,target=/cache sh -c 'cat /src/a.txt >> /cache/log; cp /cache/log /cachelog'\n`;
    const shas = [repo.commit({ Containerfile: cf, "src/a.txt": "first\n" }), repo.commit({ "src/a.txt": "second\n" })];
    for (const sha of shas) assert.equal((await build(sha)).state, BuildState.SUCCEEDED);
    const out = execFileSync("podman", ["run", "--rm", `${reg.host}/test/hello:${shas[1]}`, "cat", "/cachelog"], { env: podmanEnv(), encoding: "utf8" });
    assert.equal(out, "first\nsecond\n");
  });

  test("a Build with a request key kilnd has seen is that build, live or finished; the key with another commit is refused", async () => {
    const commit = repo.head();
    const ask = (key: string, c = commit) =>
      kilnd.client.build({ project: "hello", source: { kind: { case: "git", value: { url: repo.url, commit: c } } }, image: `${reg.host}/test/hello`, requestKey: key });
    const key = `deployment-${Date.now()}.1`;
    const [a, b] = await Promise.all([ask(key), ask(key)]);
    assert.equal(a.build!.id, b.build!.id, "two calls at once: one build");
    assert.equal(a.build!.requestKey, key);
    const done = await kilnd.waitDone(a.build!.id);
    assert.equal((await ask(key)).build!.id, done.id, "asked again after it ended: the same build, not a new one");
    assert.equal((await ask(key)).build!.state, done.state);
    const other = repo.commit({ "src/a.txt": "another commit for the key\n" });
    await assert.rejects(ask(key, other), (e: ConnectError) => e.code === Code.AlreadyExists && /was used for build/.test(e.message));
    await assert.rejects(ask("bad key!"), (e: ConnectError) => e.code === Code.InvalidArgument && /request_key/.test(e.message));
    const { builds } = await kilnd.client.listBuilds({ project: "hello" });
    assert.equal(builds.filter((x) => x.requestKey === key).length, 1);
  });

  test("ListBuilds lists newest first and filters by project", async () => {
    const { builds } = await kilnd.client.listBuilds({ project: "hello" });
    assert.ok(builds.length >= 8);
    const ids = builds.map((b) => b.id);
    assert.deepEqual(ids, [...ids].sort().reverse());
    assert.equal((await kilnd.client.listBuilds({ project: "other" })).builds.length, 0);
    assert.equal((await kilnd.client.listBuilds({ limit: 2 })).builds.length, 2);
  });

  test("a commit in the cache is not taken on another URL's word: that URL must have it, and becomes the recorded source", async () => {
    const other = makeRepo(join(dir, "other"), { Containerfile: `FROM ${base}\nCOPY x.txt /x.txt\n`, "x.txt": "other\n" });
    const cached = repo.head();
    await assert.rejects(
      kilnd.client.build({ project: "hello", source: { kind: { case: "git", value: { url: other.url, commit: cached } } }, image: `${reg.host}/test/hello` }),
      (e: Error) => /commit .* was not found in/.test(e.message),
    );
    // A mirror that does have it: accepted, and the record names it.
    const mirror = join(dir, "mirror.git");
    execFileSync("git", ["clone", "--quiet", "--bare", repo.dir, mirror]);
    const b = await build(cached, { source: { kind: { case: "git", value: { url: `file://${mirror}`, commit: cached } } } });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(b.sourceUrl, `file://${mirror}`);
  });

  test("CompareCommits orders two commits with git: ahead, behind, identical, diverged; bad input and unknown commits are refused clearly", async () => {
    const project = "compare";
    const c1 = repo.commit({ "src/a.txt": "compare 1\n" });
    const c2 = repo.commit({ "src/a.txt": "compare 2\n" });
    // A commit off c1's history (a force push), on a branch of its own.
    const tree = execFileSync("git", ["-C", repo.dir, "rev-parse", `${c1}^{tree}`], { encoding: "utf8" }).trim();
    const side = execFileSync("git", ["-C", repo.dir, "-c", "user.name=t", "-c", "user.email=t@kiln.invalid", "commit-tree", tree, "-p", `${c1}^`, "-m", "side"], { encoding: "utf8" }).trim();
    execFileSync("git", ["-C", repo.dir, "branch", "-f", "side", side]);
    const compare = (head: string, base: string, url = repo.url, creds: { username?: string; password?: string } = {}) =>
      kilnd.client.compareCommits({ project, source: { url, commit: head, ...creds }, base }).then((r) => CommitRelation[r.relation]);
    assert.equal(await compare(c2, c1), "AHEAD");
    assert.equal(await compare(c1, c2), "BEHIND");
    assert.equal(await compare(c2, c2), "IDENTICAL");
    assert.equal(await compare(side, c2), "DIVERGED");
    assert.equal(await compare(c2, side), "DIVERGED");
    const refused = async (p: Promise<unknown>, code: Code, re: RegExp) => assert.rejects(p, (e: ConnectError) => e.code === code && re.test(e.rawMessage));
    await refused(compare(c2, "z".repeat(40)), Code.InvalidArgument, /^base: .* is not a full commit SHA/);
    await refused(compare("", c2), Code.InvalidArgument, /^source.commit: is required/);
    await refused(kilnd.client.compareCommits({ project: "Bad Name", source: { url: repo.url, commit: c2 }, base: c1 }), Code.InvalidArgument, /^project:/);
    await refused(compare("0".repeat(40), c2), Code.NotFound, /was not found in/);
    // A build of the project alongside: one git at a time in its cache, and both are right.
    const [b, rel] = await Promise.all([build(c2, { project }), compare(c1, c2)]);
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.equal(rel, "BEHIND");

    // A private repository over HTTP: the credentials reach git, and no answer or log repeats them.
    const password = "compare-password-s3cret";
    const priv = makeRepo(join(dir, "private", "repo.git"), { "a.txt": "one\n" });
    const p1 = priv.head();
    const p2 = priv.commit({ "a.txt": "two\n" });
    const server = await serveGitHttp(priv.dir, { username: "x-access-token", password });
    try {
      assert.equal(await compare(p2, p1, server.url, { username: "x-access-token", password }), "AHEAD");
      const wrong = kilnd.client.compareCommits({ project: "compare-denied", source: { url: server.url, commit: p2, username: "x-access-token", password: "wrong-password" }, base: p1 });
      await refused(wrong, Code.FailedPrecondition, /access to .* was denied/);
    } finally {
      await server.stop();
    }
    assert.ok(!kilnd.output().includes(password), "kilnd's log never holds the password");
  });
});
