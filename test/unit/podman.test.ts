// How kiln reads podman's output and writes its command line and labels.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { buildCommand } from "../../src/podman/build-command.js";
import { imageUnknown } from "../../src/podman/cli.js";
import { planLabels } from "../../src/podman/labels.js";
import { createLayerStepWatch, createStepCounter } from "../../src/podman/step-counter.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

describe("step counter", () => {
  test("counts steps and cache hits, leaving out FROM and kiln's label steps", () => {
    const c = createStepCounter(new Set(["kiln.managed", "kiln.build"]));
    const out = `STEP 1/6: FROM r/base:1
STEP 2/6: WORKDIR /app
--> Using cache 4c26175f4e5806111d47cd188b0f6bf26dbd877f237cbf742b2c8fa0a4e94db3
--> 4c26175f4e5
STEP 3/6: COPY src/ ./src/
--> cdc39cafa1a
STEP 4/6: RUN echo "--> Using cache fake"
--> Using cache fake
--> 685f4dde008
STEP 5/6: LABEL "kiln.managed"="true" "kiln.build"="x"
--> Using cache f9ebce84f97
STEP 6/6: LABEL "kiln.build"="y"
COMMIT r/app:1`;
    for (const l of out.split("\n")) c.line(l);
    // WORKDIR (cached), COPY, RUN (its echo looks like a hit and is one line: counted once at most)
    assert.deepEqual(c.counts, { total: 3, cached: 2 });
  });
  test("multi-stage output: every stage's steps, prefixed [stage/stages]", () => {
    const c = createStepCounter(new Set(["kiln.managed"]));
    const out = `[1/2] STEP 1/3: FROM r/base:1 AS deps
[1/2] STEP 2/3: COPY deps.txt ./
--> Using cache 1111111111111111111111111111111111111111111111111111111111111111
[1/2] STEP 3/3: RUN install
--> Using cache 2222222222222222222222222222222222222222222222222222222222222222
[2/2] STEP 1/3: FROM r/base:1
[2/2] STEP 2/3: COPY --from=deps /out /out
--> Using cache 3333333333333333333333333333333333333333333333333333333333333333
[2/2] STEP 3/3: COPY src/ /src/
--> 444444444444`;
    for (const l of out.split("\n")) c.line(l);
    assert.deepEqual(c.counts, { total: 4, cached: 3 });
  });
  test("a user's own LABEL step counts", () => {
    const c = createStepCounter(new Set(["kiln.managed"]));
    c.line('STEP 2/3: LABEL "team"="infra"');
    assert.deepEqual(c.counts, { total: 1, cached: 0 });
  });
});

describe("the final stage's new layers, as buildah commits them", () => {
  const watched = (out: string) => {
    const seen: string[] = [];
    const w = createLayerStepWatch((id) => seen.push(id));
    for (const l of out.split("\n")) w.line(l);
    return seen;
  };
  test("a COPY, ADD or RUN that ran, not one from the cache or a metadata step", () => {
    const out = `STEP 1/7: FROM r/base:1
STEP 2/7: WORKDIR /app
--> 4c26175f4e5
STEP 3/7: COPY package.json ./
--> Using cache 1111111111111111111111111111111111111111111111111111111111111111
--> 11111111111
STEP 4/7: COPY src/ ./src/
--> cdc39cafa1a
STEP 5/7: run echo hi
hi
--> 685f4dde008
STEP 6/7: LABEL a=b
--> f9ebce84f97
STEP 7/7: ADD x /x
COMMIT r/app:1
--> 9a9a9a9a9a9
Successfully tagged r/app:1
9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a`;
    assert.deepEqual(watched(out), ["cdc39cafa1a", "685f4dde008", "9a9a9a9a9a9"]);
  });
  test("multi-stage: the last stage's only", () => {
    const out = `[1/2] STEP 1/2: FROM r/base:1 AS build
[1/2] STEP 2/2: RUN make
--> 2222222222a
[2/2] STEP 1/2: FROM r/base:1
[2/2] STEP 2/2: COPY --from=build /out /out
COMMIT r/app:1
--> 3333333333b`;
    assert.deepEqual(watched(out), ["3333333333b"]);
  });
});

describe("podman build command line", () => {
  test("every value is its own argument and the context follows --", () => {
    const input = {
      containerfile: "/c/Containerfile",
      contextDir: "/c/ctx",
      tag: "r/app:abc",
      labels: { a: "b c" },
      buildArgs: { K: "v; rm -rf /" },
      target: "app",
      network: "host",
    };
    const { file, args } = buildCommand("buildah", input);
    assert.equal(file, "buildah");
    assert.deepEqual(args.slice(0, 2), ["bud", "--pull=false"]);
    assert.deepEqual(buildCommand("podman", input).args.slice(0, 2), ["build", "--pull=missing"]);
    assert.deepEqual(args.slice(-2), ["--", "/c/ctx"]);
    assert.ok(args.includes("K=v; rm -rf /"));
    assert.ok(args.includes("a=b c"));
    assert.equal(args[args.indexOf("--target") + 1], "app");
  });

  test("the command line as logged names build args and leaves their values out", () => {
    const cmd = buildCommand("buildah", { containerfile: "/c", contextDir: "/x", tag: "t", labels: {}, buildArgs: { NPM_TOKEN: "s3cret-value", MODE: "prod" }, network: "" });
    assert.ok(cmd.args.includes("NPM_TOKEN=s3cret-value"), "buildah gets the value");
    assert.match(cmd.shown, /^buildah bud .* --build-arg NPM_TOKEN=… --build-arg MODE=… /);
    assert.doesNotMatch(cmd.shown, /s3cret-value|prod/);
  });
});

describe("label plan", () => {
  const dir = tempDir("labels");
  const tmp = join(dir, "tmp");
  mkdirSync(tmp);
  after(() => removeTree(dir));
  const labels = { "kiln.managed": "true", "kiln.project": "p" };

  test("one LABEL line is appended to a copy of the Containerfile", async () => {
    const cf = join(dir, "Containerfile");
    writeFileSync(cf, "FROM base\nRUN true");
    const plan = await planLabels(cf, undefined, labels, tmp);
    assert.notEqual(plan.containerfile, cf);
    assert.deepEqual(plan.flagLabels, {});
    assert.equal(readFileSync(plan.containerfile, "utf8"), 'FROM base\nRUN true\nLABEL "kiln.managed"="true" "kiln.project"="p"\n');
    assert.equal(readFileSync(cf, "utf8"), "FROM base\nRUN true", "the checkout is untouched");
  });
  test("the last stage as target still appends; an earlier one falls back to --label", async () => {
    const cf = join(dir, "multi");
    writeFileSync(cf, "FROM base AS build\nRUN true\nFROM base AS app\nCOPY --from=build /x /x\n");
    assert.deepEqual((await planLabels(cf, "app", labels, tmp)).flagLabels, {});
    assert.deepEqual((await planLabels(cf, "build", labels, tmp)).flagLabels, labels);
  });
  test("values the parser would expand, and a trailing continuation, fall back to --label", async () => {
    const cf = join(dir, "cf2");
    writeFileSync(cf, "FROM base\n");
    assert.deepEqual((await planLabels(cf, undefined, { src: "file:///x/$HOME" }, tmp)).flagLabels, { src: "file:///x/$HOME" });
    writeFileSync(cf, "FROM base\nRUN true \\\n");
    assert.deepEqual((await planLabels(cf, undefined, labels, tmp)).flagLabels, labels);
  });
  test("the LABEL goes before the final stage's trailing metadata steps, after its last step that writes files or labels", async () => {
    const cf = join(dir, "cf3");
    const line = 'LABEL "kiln.managed"="true" "kiln.project"="p"\n';
    const labelled = async (text: string, target?: string) => {
      writeFileSync(cf, text);
      const plan = await planLabels(cf, target, labels, tmp);
      assert.deepEqual(plan.flagLabels, {});
      return readFileSync(plan.containerfile, "utf8");
    };
    const tail = 'EXPOSE 8080\nENV A=1 \\\n  B=2\n# the user\nUSER nobody\nCMD ["node", \\\n  "server.js"]\n';
    assert.equal(await labelled(`FROM base\nWORKDIR /app\nCOPY src/ ./src/\n${tail}`), `FROM base\nWORKDIR /app\nCOPY src/ ./src/\n${line}${tail}`);
    // A RUN with a continuation ends on its last line; CRLF line ends stay as they are.
    assert.equal(await labelled("FROM base\r\nRUN a \\\r\n  b\r\nCMD x\r\n"), `FROM base\r\nRUN a \\\r\n  b\r\n${line}CMD x\r\n`);
    // The user's own LABEL (it may set one of kiln's keys: kiln's wins), WORKDIR, VOLUME and ONBUILD stay before it.
    for (const step of ["LABEL a=b", "WORKDIR /x", "VOLUME /data", "ONBUILD RUN true"]) {
      assert.equal(await labelled(`FROM base\nCOPY . .\n${step}\nUSER 1000\n`), `FROM base\nCOPY . .\n${step}\n${line}USER 1000\n`);
    }
    // Only metadata after FROM: right after the FROM of the final stage, the earlier stages untouched.
    assert.equal(await labelled("FROM base AS b\nRUN x\nFROM base AS app\nCMD x\n", "app"), `FROM base AS b\nRUN x\nFROM base AS app\n${line}CMD x\n`);
    // A heredoc anywhere in the final stage: the LABEL goes last, as it always did.
    assert.equal(await labelled("FROM base\nRUN <<EOF\nCMD x\nEOF\nUSER 1\n"), `FROM base\nRUN <<EOF\nCMD x\nEOF\nUSER 1\n${line}`);
    assert.equal(await labelled("FROM base\nRUN true"), `FROM base\nRUN true\n${line}`);
  });
});

describe("an image storage does not hold", () => {
  const result = (exitCode: number, stderr: string, signal?: string) => ({ exitCode, stdout: "", stderr, timedOut: false, ...(signal ? { signal } : {}) });
  test("podman's own answer, from image inspect (125) and rmi (1), is told apart from a failure", () => {
    assert.equal(imageUnknown(result(125, "Error: inspecting object: 0a1b: image not known")), true);
    assert.equal(imageUnknown(result(1, "Error: sha256:0a1b: image not known")), true);
    assert.equal(imageUnknown(result(125, "Error: database is locked")), false);
    assert.equal(imageUnknown(result(-1, "", "SIGTERM")), false, "a podman killed mid-answer has not said the image is gone");
    assert.equal(imageUnknown(result(0, "")), false);
  });
});
