// kiln's first build (fastpath/first-build.ts) against the truth: on a base image new to the
// kilnd's storage, kiln runs the steps after the first COPY itself, and its image must be the
// full build's (helpers/differential.ts), file by file and in its config; the base it records
// must carry the next builds (a source change, a change the first COPY reads), which are held to
// the full build too; and whatever it cannot be sure of takes the full build, saying why. Each
// app is built on a base of its own (busybox patched with the app's name): new to storage.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { pushFreshBase } from "../helpers/base-image.js";
import { createDifferential } from "../helpers/differential.js";
import { fastPathWorld, FIRST_BUILT } from "../helpers/fast-path-apps.js";
import { makeRepo, type Files } from "../helpers/git-repo.js";
import { kilndPodmanEnv, podmanProcessesFor, processesWith, runcContainersUnder, workingContainers } from "../helpers/leftovers.js";
import { startKilnd } from "../helpers/kilnd.js";
import { logText, waitForLine } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

const SOURCE_CHANGE_STARTS = /^fast path: the next build of a source change can start from this one/;

describe("kiln's first build on a base new to storage", () => {
  const w = fastPathWorld("first-build");
  const both = (project: string, files: (base: string) => Files) => {
    const base = pushFreshBase(w.reg.host, project);
    const repo = makeRepo(join(w.dir, `repo-${project}`), files(base));
    const build = async (commit: string) => {
      const r = await createDifferential(w.fast, w.full, w.reg)(repo, project, commit);
      assert.deepEqual(r.differences, []);
      assert.equal(r.f.state, BuildState.SUCCEEDED, r.f.error);
      return { ...r, log: await logText(w.fast, r.f.id) };
    };
    return { repo, build, base };
  };
  /** The images in the fast kilnd's storage, with their names. */
  const images = () =>
    (JSON.parse(execFileSync("podman", ["images", "--all", "--format", "json"], { env: kilndPodmanEnv(join(w.dir, "fast")), encoding: "utf8" })) as { Id: string; Names?: string[] }[]).map((i) => ({ id: i.Id, names: i.Names ?? [] }));

  test("COPY, RUN, COPY and metadata: kiln's image is the full build's, and the next builds start from it", async () => {
    const { repo, build } = both("steps", (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /app\nENV MODE=first\nCOPY deps.txt ./\nRUN cp deps.txt deps.installed && mkdir -p src/cache && echo $MODE > mode.txt\nCOPY src/ ./src/\nEXPOSE 8080\nUSER 1000\nCMD ["cat", "/app/src/a.txt"]\n`,
      "deps.txt": "left-pad 1\n",
      "src/a.txt": "hello\n",
      "src/sub/b.txt": "b\n",
    }));
    const first = await build(repo.head());
    assert.equal(first.f.fastPath, true, first.log);
    assert.equal(first.f.firstBuild, true);
    assert.match(first.log, /first build: .* is new to storage, so no step can come from the cache: buildah builds the 3 steps before the first COPY/);
    assert.match(first.log, /first build: buildah built the 3 steps before the first COPY; kiln made 2 COPY layers and ran 1 RUN step/);
    assert.match(await w.fast.fastPathRecord(first.f.id), SOURCE_CHANGE_STARTS);
    // The prefix stays in storage, tagged as the commit's stage 0 (the next builds' RUN steps stand on it); the skeleton does not.
    const now = images();
    assert.ok(now.some((i) => i.names.includes(`localhost/kiln-stage/steps:${repo.head()}-0`)), JSON.stringify(now));
    assert.ok(!now.some((i) => i.names.some((n) => n.startsWith("localhost/kiln-first-build/"))), JSON.stringify(now));

    const edit = await build(repo.commit({ "src/a.txt": "hello again\n" }, "edit"));
    assert.equal(edit.f.fastPath, true, edit.log);
    assert.equal(edit.f.firstBuild, false);
    assert.match(edit.log, /fast path: made the final COPY's layer/);
    const deps = await build(repo.commit({ "deps.txt": "left-pad 2\n" }, "deps"));
    assert.equal(deps.f.fastPath, true, deps.log);
    assert.match(deps.log, /fast path: started from step 4, the first COPY that reads a changed file/);
    const again = await build(repo.commit({ "src/sub/b.txt": "b2\n" }, "after deps"));
    assert.equal(again.f.fastPath, true, again.log);
  });

  test("the prefix stays while a base stands on it (a prune of every project leaves it), and goes once none does", async () => {
    const { repo, build, base } = both("prefix", (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY deps.txt ./\nRUN cp deps.txt installed.txt\nCOPY src/ ./src/\n`,
      "deps.txt": "1\n",
      "src/a.txt": "a\n",
    }));
    const first = await build(repo.head());
    assert.equal(first.f.fastPath, true, first.log);
    await w.fast.fastPathRecord(first.f.id);
    const tag = `localhost/kiln-stage/prefix:${repo.head()}-0`;
    const tagged = () => images().some((i) => i.names.includes(tag));
    assert.ok(tagged(), "the prefix is tagged");
    // A prune of every project: the first build's commit has no image in storage, but the base stands on its prefix.
    await w.fast.client.prune({});
    assert.ok(tagged(), "the prune left the prefix the base stands on");
    const deps = await build(repo.commit({ "deps.txt": "2\n" }, "deps"));
    assert.equal(deps.f.fastPath, true, deps.log);
    assert.match(deps.log, /fast path: started from step 3/);
    // A change before the first COPY: the full build, whose base no longer stands on the prefix; its prune lets the prefix go.
    const full = await build(repo.commit({ Containerfile: `FROM ${base}\nWORKDIR /app\nENV MODE=2\nCOPY deps.txt ./\nRUN cp deps.txt installed.txt\nCOPY src/ ./src/\n` }, "full"));
    assert.equal(full.f.fastPath, false, full.log);
    await w.fast.fastPathRecord(full.f.id);
    await w.fast.client.prune({ project: "prefix" });
    assert.ok(!tagged(), "the prefix's tag went once no base stood on it");
  });

  test("COPY steps only, a file to a path of its own and into a directory of the image: the full build's image", async () => {
    const { repo, build } = both("copies", (base) => ({
      Containerfile: `FROM ${base}\nWORKDIR /srv/site\nCOPY . .\nCOPY conf.txt /etc/site.conf\nCOPY tool.sh /bin\nCMD ["cat", "/srv/site/index.html"]\n`,
      "index.html": "<p>hi</p>\n",
      "conf.txt": "a=1\n",
      "tool.sh": { content: "#!/bin/sh\necho tool\n", mode: 0o755 },
    }));
    const first = await build(repo.head());
    assert.equal(first.f.fastPath, true, first.log);
    assert.match(first.log, /kiln made 3 COPY layers and ran 0 RUN steps/);
    const edit = await build(repo.commit({ "tool.sh": { content: "#!/bin/sh\necho tool 2\n", mode: 0o755 } }, "edit"));
    assert.equal(edit.f.fastPath, true, edit.log);
  });

  // Shapes whose first build kiln takes: each image must be the full build's.
  const taken: { project: string; what: string; files: (base: string) => Files }[] = [
    {
      project: "workdir-elsewhere",
      what: "a WORKDIR the image lacks, the first COPY writing elsewhere (buildah makes the directory in that COPY's layer)",
      files: (base) => ({ Containerfile: `FROM ${base}\nWORKDIR /w/deeper\nCOPY a.txt /opt/a.txt\nRUN ls /opt > list.txt\n`, "a.txt": "a\n" }),
    },
    {
      project: "workdir-user",
      what: "a USER before the WORKDIR (the directories the COPY makes are root's, the rest of the WORKDIR the user's)",
      files: (base) => ({ Containerfile: `FROM ${base}\nUSER 1000:1000\nWORKDIR /home/app/work\nCOPY a.txt /home/app/\nRUN cat ../a.txt > b.txt\nCOPY c.txt /srv/c.txt\n`, "a.txt": "a\n", "c.txt": "c\n" }),
    },
    {
      project: "workdir-dest",
      what: "a USER before the WORKDIR the first COPY writes into (buildah's copier makes it, root's)",
      files: (base) => ({ Containerfile: `FROM ${base}\nUSER 1000:1000\nWORKDIR /x/y\nCOPY a.txt ./\nRUN cat a.txt\n`, "a.txt": "a\n" }),
    },
    {
      project: "after-from",
      what: "a COPY right after FROM (the prefix is the base itself)",
      files: (base) => ({ Containerfile: `FROM ${base}\nCOPY a.txt /app/\nRUN cat /app/a.txt > /app/b.txt\nCMD ["cat", "/app/b.txt"]\n`, "a.txt": "a\n" }),
    },
  ];
  for (const c of taken) {
    test(`taken (${c.project}): ${c.what}`, async () => {
      const { repo, build } = both(c.project, c.files);
      const first = await build(repo.head());
      assert.equal(first.f.fastPath, true, first.log);
      assert.match(first.log, FIRST_BUILT);
      const edit = await build(repo.commit({ "a.txt": "a, edited\n" }, "edit"));
      assert.equal(edit.f.fastPath, true, edit.log);
    });
  }

  const refusals: { project: string; why: RegExp; files: (base: string) => Files }[] = [
    {
      project: "stages",
      why: /first build: not taken: the Containerfile has more than one stage; full build/,
      files: (base) => ({ Containerfile: `FROM ${base} AS b\nCOPY a.txt /a.txt\nFROM ${base}\nWORKDIR /app\nCOPY --from=b /a.txt ./\nCOPY a.txt ./again.txt\n`, "a.txt": "a\n" }),
    },
    {
      project: "chown",
      why: /first build: not taken: a COPY has --chown/,
      files: (base) => ({ Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY --chown=1000:1000 a.txt ./\n`, "a.txt": "a\n" }),
    },
    {
      project: "run-chmod",
      why: /first build: not taken: a RUN step wrote \/app, where a later COPY writes a directory, otherwise than kiln read it/,
      files: (base) => ({ Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY a.txt ./\nRUN chmod 700 /app\nCOPY b.txt ./\n`, "a.txt": "a\n", "b.txt": "b\n" }),
    },
  ];
  for (const r of refusals) {
    test(`refused (${r.project}): the full build runs, and its image is the same`, async () => {
      const { repo, build } = both(r.project, r.files);
      const first = await build(repo.head());
      assert.equal(first.f.fastPath, false, first.log);
      assert.match(first.log, r.why);
    });
  }

  test("a Cancel while kiln runs a first build's RUN (the skeleton beside it): CANCELLED, nothing left running or mounted, and the commit builds after", async () => {
    // The RUN sleeps while the commit has a file "slow".
    const RUN = "if [ -f slow ]; then sleep 60; fi && touch done";
    const repo = makeRepo(join(w.dir, "repo-cancel"), { Containerfile: `FROM ${pushFreshBase(w.reg.host, "cancel")}\nWORKDIR /app\nENV A=1\nCOPY . ./\nRUN ${RUN}\nEXPOSE 1\nUSER 1000\n`, slow: "" });
    const submit = async (commit: string) => (await w.fast.client.build({ project: "cancel", source: { kind: { case: "git", value: { url: repo.url, commit } } }, image: `${w.reg.host}/fast/cancel` })).build!;
    const b = await submit(repo.head());
    await waitForLine(w.fast.client, b.id, `first build: RUN ${RUN}`);
    const { build: cancelled } = await w.fast.client.cancel({ buildId: b.id });
    assert.equal(cancelled!.state, BuildState.CANCELLED, cancelled!.error);
    const data = join(w.dir, "fast");
    // The processes exit on their own right after the RUN's container is killed; give them that moment.
    const gone = () => podmanProcessesFor(data).length === 0 && processesWith("sleep 60").length === 0;
    await waitFor(gone, 5000, "the build's processes to exit").catch(() => {});
    assert.deepEqual(podmanProcessesFor(data), []);
    assert.deepEqual(processesWith("sleep 60"), []);
    assert.deepEqual(runcContainersUnder(data), []);
    // The RUN's overlays (in the build's directory), and the skeleton's working container (images kiln keeps mounted for the next builds are not leftovers).
    const mounts = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "");
    assert.deepEqual(mounts.filter((m) => m.startsWith(`${join(data, "tmp")}/`)), []);
    assert.deepEqual(workingContainers(data), []);
    assert.equal(await w.reg.digest("fast/cancel", repo.head()), undefined, "the commit is not tagged");
    const again = await w.fast.waitDone((await submit(repo.commit({ slow: null, "a.txt": "a\n" }, "not slow"))).id);
    assert.equal(again.state, BuildState.SUCCEEDED, again.error);
  });

  test("a kilnd killed while its first build's RUN runs and its skeleton is tagged: at the restart the build is FAILED and no skeleton, working container or process is left", async () => {
    const data = join(w.dir, "killed");
    const kilnd = await startKilnd({ data, registry: w.reg.host, bundle: true });
    const RUN = "sleep 60";
    const repo = makeRepo(join(w.dir, "repo-killed"), { Containerfile: `FROM ${pushFreshBase(w.reg.host, "killed")}\nWORKDIR /app\nCOPY a.txt ./\nRUN ${RUN}\nUSER 1000\n`, "a.txt": "a\n" });
    const b = (await kilnd.client.build({ project: "killed", source: { kind: { case: "git", value: { url: repo.url, commit: repo.head() } } }, image: `${w.reg.host}/fast/killed` })).build!;
    await waitForLine(kilnd.client, b.id, `first build: RUN ${RUN}`);
    const skeletons = () =>
      (JSON.parse(execFileSync("podman", ["images", "--format", "json"], { env: kilndPodmanEnv(data), encoding: "utf8" })) as { Names?: string[] }[]).flatMap((i) => (i.Names ?? []).filter((n) => n.startsWith("localhost/kiln-first-build/")));
    // The skeleton is built beside the RUN, which sleeps: wait until it is tagged.
    await waitFor(() => skeletons().length === 1, 60_000, "the skeleton's image");
    await kilnd.kill9();
    const again = await startKilnd({ data, registry: w.reg.host, bundle: true });
    try {
      // GetBuild waits for the start-up recovery.
      const after = (await again.client.getBuild({ buildId: b.id })).build!;
      assert.equal(after.state, BuildState.FAILED);
      assert.match(after.error, /interrupted/);
      assert.deepEqual(skeletons(), []);
      assert.deepEqual(workingContainers(data), []);
      assert.deepEqual(processesWith("sleep 60"), []);
      assert.deepEqual(runcContainersUnder(data), []);
    } finally {
      await again.stop();
    }
  });

  test("a base storage has already: the full build, no first build", async () => {
    const repo = makeRepo(join(w.dir, "repo-known"), { Containerfile: `FROM ${w.base}\nWORKDIR /app\nCOPY a.txt ./\n`, "a.txt": "a\n" });
    // Another project on the same base first: its build brings the base into storage.
    const other = makeRepo(join(w.dir, "repo-known-first"), { Containerfile: `FROM ${w.base}\nWORKDIR /x\nCOPY a.txt ./\n`, "a.txt": "x\n" });
    await createDifferential(w.fast, w.full, w.reg)(other, "known-first", other.head());
    const r = await createDifferential(w.fast, w.full, w.reg)(repo, "known", repo.head());
    assert.deepEqual(r.differences, []);
    const log = await logText(w.fast, r.f.id);
    assert.equal(r.f.fastPath, false, log);
    assert.doesNotMatch(log, FIRST_BUILT);
    assert.doesNotMatch(log, /^first build:/m);
  });
});
