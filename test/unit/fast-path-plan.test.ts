// Which Containerfiles the fast path takes, and which changes it sees as reaching earlier steps.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { contextCopies, planFastPath, planReads, planStageCopy } from "../../src/fastpath/plan.js";

const plan = (text: string, target?: string) => planFastPath(text, target);

describe("fast path plan", () => {
  test("a cache-friendly Node Containerfile is taken: sources, destination, earlier COPY sources, steps", () => {
    const r = plan(`ARG BASE=x\nFROM \${BASE}\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN --mount=type=cache,target=/root/.npm npm ci\nCOPY src/ ./src/\nEXPOSE 8080\nUSER nobody\nCMD ["node", "src/server.js"]\n`);
    assert.ok(r.ok);
    assert.deepEqual(r.plan, {
      sources: ["src"],
      dest: "./src/",
      chown: false,
      earlier: ["package.json", "package-lock.json"],
      steps: { total: 7, reused: 3 },
      onbuild: 0,
      after: [],
      copyStep: 5,
    });
  });

  test("COPY . . with --chown, line continuations and comments", () => {
    const r = plan(`FROM b\n# deps\nCOPY --chown=node:node \\\n  package*.json ./\nRUN npm ci\nCOPY --chown=node:node . .\n`);
    assert.ok(r.ok);
    assert.deepEqual(r.plan.sources, [""]);
    assert.equal(r.plan.chown, true);
    assert.deepEqual(r.plan.earlier, ["package*.json"]);
  });

  const refusals: [string, string, RegExp][] = [
    ["a final stage that copies only from a stage", "FROM a AS build\nCOPY . .\nFROM b\nCOPY --from=build /x /x\n", /no COPY from the context/],
    ["a COPY --from after the final COPY", "FROM a AS build\nCOPY . .\nFROM b\nCOPY . /app/\nCOPY --from=build /x /x\n", /COPY --from after the final COPY/],
    ["COPY --from an image, not a stage", "FROM a AS deps\nRUN x\nFROM b\nCOPY --from=r.example/img:1 /x /x\nCOPY . /app/\n", /names an image/],
    ["a RUN with a bind mount after the final COPY", "FROM a\nCOPY . .\nRUN --mount=type=bind,target=/c make\n", /RUN after the final COPY has a --mount=type=bind/],
    ["a RUN after the final COPY that starts with [ but is no JSON array", "FROM a\nCOPY . .\nRUN ['make']\n", /not a JSON array of strings/],
    ["a SHELL in the final stage of an OCI-format build, with RUN steps after the COPY", "FROM a\nSHELL [\"/bin/bash\", \"-c\"]\nCOPY . .\nRUN make\n", /SHELL .*OCI-format/],
    ["an ARG whose default expands a variable, with RUN steps after the COPY", "FROM a\nARG V=$HOME\nCOPY . .\nRUN make\n", /ARG V=\$HOME has a variable/],
    ["a quoted ARG default among the RUN steps", "FROM a\nCOPY . .\nARG V=\"a b\"\nRUN make\n", /a quote .* among the steps after the final COPY/],
    ["a platform ARG (buildah fills it in)", "FROM a\nARG TARGETARCH\nCOPY . .\nRUN make\n", /TARGETARCH/],
    ["a proxy ARG (buildah keeps it out of the history)", "FROM a\nARG HTTP_PROXY\nCOPY . .\nRUN make\n", /proxy/],
    ["a global ARG kiln cannot follow, with RUN steps after the COPY", "ARG B=$X\nFROM a\nCOPY . .\nRUN make\n", /has a variable/],
    ["an ENV with a variable among the RUN steps", "FROM a\nCOPY . .\nENV P=$HOME/bin\nRUN make\n", /variable/],
    ["a VOLUME among the RUN steps", "FROM a\nCOPY . .\nVOLUME /data\nRUN make\n", /VOLUME/],
    ["WORKDIR after a COPY to a relative destination", "FROM a\nCOPY . .\nWORKDIR /x\n", /WORKDIR after the final COPY, whose destination is relative/],
    ["WORKDIR below the COPY's destination (it may create it)", "FROM a\nCOPY . /app\nWORKDIR /app/sub\n", /not the COPY's destination or above it/],
    ["WORKDIR elsewhere", "FROM a\nCOPY . /app\nWORKDIR /srv\n", /not the COPY's destination or above it/],
    ["a relative WORKDIR after the COPY", "FROM a\nCOPY . /app\nWORKDIR app\n", /not an absolute plain path/],
    ["a WORKDIR among the RUN steps", "FROM a\nCOPY . /app\nWORKDIR /app\nRUN x\n", /WORKDIR among the steps after the final COPY/],
    ["ADD anywhere", "FROM a\nADD x.tgz /\nCOPY . .\n", /ADD/],
    ["ADD last", "FROM a\nADD . /app\n", /no COPY from the context/],
    ["ADD after the final COPY", "FROM a\nCOPY . /app/\nADD x.tgz /\n", /ADD after the final COPY/],
    ["--from on the only COPY", "FROM a\nCOPY --from=img /x /x\n", /no COPY from the context/],
    ["--chmod", "FROM a\nCOPY --chmod=755 . /app/\n", /--chmod/],
    ["a glob in the final COPY", "FROM a\nCOPY *.js /app/\n", /glob/],
    ["a variable", "FROM a\nARG D=/app\nCOPY . $D\n", /variables/],
    ["a context bind mount", "FROM a\nRUN --mount=type=bind,target=/src make\nCOPY . .\n", /bind-mounts/],
    ["several sources, no trailing slash", "FROM a\nCOPY a b /app\n", /trailing/],
    ["outside the context", "FROM a\nCOPY ../x /app/\n", /outside/],
    ["an escape directive", "# escape=`\nFROM a\nCOPY . .\n", /escape/],
    ["a heredoc", "FROM a\nRUN <<EOF\necho\nEOF\nCOPY . .\n", /heredoc/],
    ["a target that is not the stage", "FROM a AS app\nCOPY . .\n", /target/],
  ];
  test("exec-form RUN and SHELL (Docker-format builds): the words run without a shell; a SHELL after the COPY is the RUN's", () => {
    const text = 'FROM a\nSHELL ["/bin/sh", "-ec"]\nCOPY . /app/\nRUN ["touch", "/app/x"]\nRUN one\nSHELL ["/bin/busybox", "sh", "-c"]\nRUN two\n';
    const r = planFastPath(text, undefined, undefined, { docker: true });
    assert.ok(r.ok, r.ok ? "" : r.reason);
    const [exec, one, two] = r.plan.after as { exec?: string[]; shell?: string[]; history: string }[];
    assert.deepEqual(exec!.exec, ["touch", "/app/x"]);
    assert.equal(exec!.history, '/bin/sh -c ["touch", "/app/x"]');
    // The SHELL before the COPY is the parent image's: the RUN carries none of its own.
    assert.equal(one!.shell, undefined);
    assert.deepEqual(two!.shell, ["/bin/busybox", "sh", "-c"]);
    const bad = planFastPath("FROM a\nCOPY . /app/\nSHELL /bin/bash -c\nRUN two\n", undefined, undefined, { docker: true });
    assert.ok(!bad.ok && /SHELL after the final COPY is not a JSON array/.test(bad.reason));
  });

  test("ARG: a RUN sees the stage's declared names with values: build args first, then defaults, then global ARGs; later ARGs from their step on", () => {
    const text = "ARG G=global\nARG H\nFROM a\nARG A=1 B\nARG G\nARG U=default\nCOPY . /app/\nRUN one\nARG C=3\nARG H\nRUN two\n";
    const r = planFastPath(text, undefined, undefined, { buildArgs: { U: "user", B: "b", H: "h", UNDECLARED: "x" } });
    assert.ok(r.ok, r.ok ? "" : r.reason);
    const runs = r.plan.after.filter((s) => "command" in s);
    assert.deepEqual(
      runs.map((s) => ("args" in s ? s.args : [])),
      [
        [["A", "1"], ["B", "b"], ["G", "global"], ["U", "user"]],
        [["A", "1"], ["B", "b"], ["C", "3"], ["G", "global"], ["H", "h"], ["U", "user"]],
      ],
    );
    // Without a build arg, a declared name with no default and no global ARG has no value: not seen.
    const bare = planFastPath("FROM a\nARG X\nCOPY . /app/\nRUN one\n", undefined);
    assert.ok(bare.ok);
    assert.deepEqual("args" in bare.plan.after[0]! ? bare.plan.after[0].args : undefined, []);
    // Nothing to run: an ARG kiln cannot follow is no reason to refuse.
    assert.ok(planFastPath("FROM a\nARG V=$HOME\nCOPY . /app/\n", undefined).ok);
  });

  test("multi-stage: earlier stages' context reads are earlier sources; steps of all stages counted; --target an earlier stage refused", () => {
    const text = "FROM a AS deps\nWORKDIR /d\nCOPY deps.txt ./\nRUN install\nFROM b\nCOPY --from=deps /d /d\nCOPY --from=0 /d/x /x\nCOPY src/ /app/src/\nCMD x\n";
    const r = plan(text);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.deepEqual(r.plan.earlier, ["deps.txt"]);
    assert.deepEqual(r.plan.steps, { total: 7, reused: 5 });
    const t = plan(text, "deps");
    assert.ok(!t.ok && /--target deps is not the last stage/.test(t.reason));
  });

  for (const [name, text, why] of refusals) {
    test(`refused: ${name}`, () => {
      const r = plan(text, name.startsWith("a target") ? "other" : undefined);
      assert.equal(r.ok, false);
      assert.match((r as { reason: string }).reason, why);
    });
  }

  test("WORKDIR after the final COPY, naming its destination or a directory above it, is taken", () => {
    for (const text of ["FROM a\nCOPY . /app\nWORKDIR /app\nCMD x\n", "FROM a\nCOPY src/ /app/src/\nWORKDIR /app\nWORKDIR /\n", "FROM a\nCOPY conf.txt /etc/app/conf.txt\nWORKDIR /etc/app\n"]) {
      const r = plan(text);
      assert.ok(r.ok, `${text}: ${(r as { reason: string }).reason}`);
    }
  });

  test("RUN steps after the final COPY: commands as buildah joins them, with the ENV and USER set between", () => {
    const r = plan(`FROM a\nWORKDIR /app\nCOPY package.json ./\nRUN npm ci\nCOPY src/ ./src/\nRUN npm run \\\n  build\nENV NODE_ENV=production A="b c"\nUSER node\nRUN npm prune\nEXPOSE 80\nCMD ["node"]\n`);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.deepEqual(r.plan.after, [
      { command: "npm run   build", env: [], args: [], cache: [], secrets: [], history: "/bin/sh -c npm run   build" },
      { command: "npm prune", env: [["NODE_ENV", "production"], ["A", "b c"]], user: "node", args: [], cache: [], secrets: [], history: "/bin/sh -c npm prune" },
    ]);
    assert.equal(r.plan.copyStep, 5);
    assert.deepEqual(r.plan.steps, { total: 10, reused: 3 });
  });

  test("starting from an earlier COPY: the cache-mount RUN and the later COPY are kiln's steps, what comes before is earlier", () => {
    const text = `FROM a\nWORKDIR /app\nENV N=1\nCOPY package.json package-lock.json ./\nRUN --mount=type=cache,target=/root/.npm,sharing=locked npm ci --omit=dev\nCOPY src/ ./src/\nEXPOSE 8080\nUSER nobody\nCMD ["node"]\n`;
    assert.equal(contextCopies(text), 2);
    const r = planFastPath(text, undefined, 0);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.deepEqual(r.plan.sources, ["package.json", "package-lock.json"]);
    assert.deepEqual(r.plan.earlier, []);
    assert.equal(r.plan.copyStep, 4);
    assert.deepEqual(r.plan.steps, { total: 8, reused: 2 });
    assert.deepEqual(r.plan.after, [
      {
        command: "npm ci --omit=dev",
        env: [],
        args: [],
        cache: [{ target: "/root/.npm", source: "root/.npm", locked: true, mode: 0o755, uid: 0, gid: 0 }],
        secrets: [],
        history: "/bin/sh -c --mount=type=cache,target=/root/.npm,sharing=locked npm ci --omit=dev",
      },
      { copy: { sources: ["src"], dest: "./src/" } },
    ]);
    // The last COPY is still the default start, with nothing after it to run.
    const last = planFastPath(text, undefined);
    assert.ok(last.ok);
    assert.deepEqual(last.plan.after, []);
    assert.deepEqual(last.plan.earlier, ["package.json", "package-lock.json"]);
  });

  test("secret mounts: read as kiln's rewrite leaves them; a secret the request does not give is not mounted unless required", () => {
    const run = (m: string) => planFastPath(`FROM a\nWORKDIR /app\nCOPY . .\nRUN --mount=${m} make\n`, undefined);
    const given = run("type=secret,id=npmrc.kiln-0123abcd,target=/root/.npmrc,mode=0440,uid=1000");
    assert.ok(given.ok, given.ok ? "" : given.reason);
    assert.deepEqual((given.plan.after[0] as { secrets: unknown }).secrets, [{ id: "npmrc", target: "/root/.npmrc", mode: 0o440, uid: 1000, gid: 0 }]);
    const absent = run("type=secret,id=other,target=/run/secrets/other");
    assert.ok(absent.ok);
    assert.deepEqual((absent.plan.after[0] as { secrets: unknown }).secrets, []);
    for (const [m, why] of [
      ["type=secret,id=other,required=true", /required secret mount of a secret the request does not give/],
      ["type=secret,id=a.kiln-00,target=relative", /absolute plain path/],
      ["type=secret,id=a.kiln-00,target=/x,env=A", /option kiln does not take \(env\)/],
    ] as const) {
      const r = run(m);
      assert.ok(!r.ok && why.test(r.reason), `${m}: ${r.ok ? "taken" : r.reason}`);
    }
  });

  test("cache mounts: an id names the directory; options buildah does not take here, and ids leading out, are refused", () => {
    const mount = (m: string) => planFastPath(`FROM a\nWORKDIR /app\nCOPY . .\nRUN --mount=${m} make\n`, undefined);
    const ok = mount("type=cache,id=npm/x,target=/c,mode=0700,uid=1000,gid=1000");
    assert.ok(ok.ok, ok.ok ? "" : ok.reason);
    assert.deepEqual((ok.plan.after[0] as { cache: unknown }).cache, [{ target: "/c", source: "npm/x", locked: false, mode: 0o700, uid: 1000, gid: 1000 }]);
    for (const [m, why] of [
      ["type=bind,target=/c", /type=bind/],
      ["type=cache,target=/c,from=build", /option kiln does not take \(from\)/],
      ["type=cache,target=/c,sharing=private", /option kiln does not take \(sharing\)/],
      ["type=cache,target=/c,ro", /option kiln does not take \(ro\)/],
      ["type=cache,id=../../etc,target=/c", /leads out/],
      ["type=cache,id=npm-$NODE_MAJOR,target=/c", /option kiln does not take \(id\)/],
      ["type=cache,target=relative", /absolute plain path/],
      ["type=cache,target=/", /absolute plain path/],
    ] as const) {
      const r = mount(m);
      assert.ok(!r.ok && why.test(r.reason), `${m}: ${r.ok ? "taken" : r.reason}`);
    }
    const network = planFastPath(`FROM a\nCOPY . /app\nRUN --network=none make\n`, undefined);
    assert.ok(!network.ok && /--network/.test(network.reason));
  });

  test("a later COPY kiln cannot make, or a WORKDIR among the steps, keeps the earlier start from being taken", () => {
    for (const [text, why] of [
      [`FROM a\nCOPY a /x/\nRUN make\nCOPY --chmod=644 b /y/\n`, /a COPY after the COPY kiln starts from has --chmod/],
      [`FROM a\nCOPY a /x/\nRUN make\nCOPY --chown=1 --chmod=644 b /y/\n`, /has --chmod/],
      [`FROM a\nCOPY a /x/\nRUN make\nCOPY --chown=$APP b /y/\n`, /--chown with a variable/],
      [`FROM a\nCOPY a /x/\nRUN make\nCOPY src/*.js /y/\n`, /glob/],
      [`FROM a\nCOPY a /x/\nWORKDIR /w\nCOPY b /y/\n`, /WORKDIR among the steps/],
      [`FROM a\nCOPY a /x/\nVOLUME /v\nCOPY b /y/\n`, /VOLUME among the steps/],
      [`FROM a\nCOPY a /x/\nADD b /y/\n`, /ADD after/],
    ] as const) {
      const r = planFastPath(text, undefined, 0);
      assert.ok(!r.ok && why.test(r.reason), `${text}: ${r.ok ? "taken" : r.reason}`);
    }
  });

  test("a later COPY with --chown is kiln's to make, its value kept (a name is checked when kiln runs the steps)", () => {
    const r = planFastPath(`FROM a\nWORKDIR /app\nCOPY --chown=node:node package.json ./\nRUN npm ci\nCOPY --chown=node:node . .\nCOPY --chown=1000 b /y/\n`, undefined, 0);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.equal(r.plan.chown, true);
    assert.deepEqual(
      r.plan.after.map((s) => ("copy" in s ? s.copy : s.command)),
      ["npm ci", { sources: [""], dest: ".", chown: "node:node" }, { sources: ["b"], dest: "/y/", chown: "1000" }],
    );
  });

  test("a target naming the one stage is fine", () => {
    assert.ok(plan("FROM a AS app\nCOPY . /app/\n", "app").ok);
  });

});

describe("a stage kiln reruns for the final COPY --from", () => {
  const ts = `FROM n AS deps\nWORKDIR /app\nCOPY package.json ./\nRUN npm ci\nFROM deps AS build\nCOPY tsconfig.json ./\nCOPY src/ ./src/\nRUN npx tsc\nFROM n\nWORKDIR /app\nCOPY package.json ./\nRUN --mount=type=cache,target=/c npm ci --omit=dev\nCOPY --from=build /app/dist ./dist\nUSER node\nCMD ["node"]\n`;
  test("the build stage's final COPY and RUN; every other context read is earlier (twice where two stages read it)", () => {
    const r = planStageCopy(ts, undefined);
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.equal(r.plan.stageIndex, 1);
    assert.deepEqual(r.plan.stage.sources, ["src"]);
    assert.deepEqual(r.plan.stage.after, [{ command: "npx tsc", env: [], args: [], cache: [], secrets: [], history: "/bin/sh -c npx tsc" }]);
    assert.equal(r.plan.stage.copyStep, 3);
    assert.deepEqual(r.plan.copy.sources, ["app/dist"]);
    assert.equal(r.plan.copy.dest, "./dist");
    assert.deepEqual(r.plan.copy.earlier, ["package.json", "tsconfig.json", "package.json"]);
  });
  const refusals: [string, string, RegExp][] = [
    ["one stage", "FROM a\nCOPY . .\nRUN x\n", /one stage/],
    ["a RUN after the COPY --from", ts.replace('USER node', 'RUN ls dist'), /not a COPY --from a stage/],
    ["the stage is used twice", ts.replace("USER node", "COPY --from=build /app/package.json ./p.json"), /used by more than/],
    ["a stage that is the base of another", "FROM a AS build\nCOPY src/ /src/\nRUN make\nFROM build AS more\nRUN x\nFROM b\nCOPY --from=build /out /out\n", /used by more than/],
    ["a glob in the COPY --from", ts.replace("/app/dist", "/app/dist/*.js"), /glob/],
    ["a relative COPY --from source", ts.replace("/app/dist", "dist"), /relative/],
    ["--chown on the COPY --from", ts.replace("COPY --from=build", "COPY --chown=1 --from=build"), /--chown/],
    ["the stage's RUN requires a secret the request does not give", ts.replace("RUN npx tsc", "RUN --mount=type=secret,id=s,required=true npx tsc"), /stage build: a RUN after the final COPY has a required secret mount/],
    ["a context bind mount anywhere", ts.replace("RUN npm ci\n", "RUN --mount=type=bind,target=/s npm ci\n"), /bind-mounts/],
  ];
  for (const [name, text, why] of refusals) {
    test(`refused: ${name}`, () => {
      const r = planStageCopy(text, undefined);
      assert.equal(r.ok, false);
      assert.match((r as { reason: string }).reason, why);
    });
  }
});

describe("FROM lines", async () => {
  const { fromLines, parseImageName, pinFromLines } = await import("../../src/images/base-images.js");
  test("ARGs before the first FROM expand (defaults, then build args); stages and scratch are not images", () => {
    const text = 'ARG REG=r.example:5000\nARG TAG="20"\nFROM $REG/node:${TAG} AS deps\nFROM scratch\nFROM --platform=linux/amd64 deps\nFROM ${UNKNOWN}/x\n';
    const lines = fromLines(text, { TAG: "22" });
    assert.deepEqual(lines.map((l) => [l.written, l.image, l.notImage]), [
      ["$REG/node:${TAG}", "r.example:5000/node:22", false],
      ["scratch", "scratch", true],
      ["deps", "deps", true],
      ["${UNKNOWN}/x", undefined, false],
    ]);
    assert.equal(pinFromLines(text, [{ line: lines[0]!, digest: "sha256:abc" }]).split("\n")[2], "FROM r.example:5000/node:22@sha256:abc AS deps");
  });
  test("image names: registry, repository, tag (latest by default) and digest", () => {
    assert.deepEqual(parseImageName("r.example:5000/team/app:1.2"), { registry: "r.example:5000", repository: "team/app", tag: "1.2" });
    assert.deepEqual(parseImageName("r.example/app"), { registry: "r.example", repository: "app", tag: "latest" });
    assert.deepEqual(parseImageName("r.example/app:1@sha256:ff"), { registry: "r.example", repository: "app", tag: "1", digest: "sha256:ff" });
    assert.equal(parseImageName("node:20"), undefined);
  });
});

describe("fast path reads (a build whose change no step reads)", () => {
  const reads = (text: string, target?: string) => planReads(text, target);

  test("every stage's COPY sources, RUN after the sources, steps counted across stages", () => {
    const r = reads(
      `ARG BASE=x\nFROM \${BASE} AS deps\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN --mount=type=cache,target=/root/.npm npm ci\n` +
        `FROM deps AS build\nCOPY tsconfig.json ./\nCOPY src/ ./src/\nRUN npx tsc\n` +
        `FROM \${BASE}\nCOPY --from=build /app/dist ./dist\nCOPY --from=0 /app/node_modules ./node_modules\nUSER node\nCMD ["node", "dist/server.js"]\n`,
    );
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.deepEqual(r.plan, { reads: ["package.json", "package-lock.json", "tsconfig.json", "src"], mounts: [], steps: 10, onbuild: 0 });
  });

  test("a RUN that bind-mounts the context reads all of it, ignored files too; one that mounts an earlier stage reads none", () => {
    const r = reads("FROM a AS x\nRUN true\nFROM b\nRUN --mount=type=bind,target=/src make\nRUN --mount=type=bind,from=x,target=/x ls\n");
    assert.ok(r.ok);
    assert.deepEqual(r.plan.reads, []);
    assert.deepEqual(r.plan.mounts, [""]);
  });

  test("--target: the stages after it are not built, so not read", () => {
    const r = reads("FROM a AS one\nCOPY a.txt /\nFROM b AS two\nCOPY b.txt /\n", "one");
    assert.ok(r.ok);
    assert.deepEqual(r.plan, { reads: ["a.txt"], mounts: [], steps: 1, onbuild: 0 });
  });

  const refusals: [string, string, RegExp][] = [
    ["ADD", "FROM a\nADD x.tgz /\n", /ADD/],
    ["COPY --from an image", "FROM a\nCOPY --from=r.example/img:1 /x /x\n", /names an image/],
    ["COPY --from a later stage", "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\nRUN x\n", /names an image/],
    ["a mount from an image", "FROM a\nRUN --mount=type=cache,from=r.example/c,target=/c x\n", /mounts an image/],
    ["a variable in a COPY", "FROM a\nARG D\nCOPY $D /d\n", /variables/],
    ["a heredoc", "FROM a\nRUN <<EOF\nx\nEOF\n", /heredoc/],
    ["an escape directive", "# escape=`\nFROM a\n", /escape/],
    ["an unknown target", "FROM a AS one\n", /names no stage/],
  ];
  for (const [name, text, why] of refusals) {
    test(`refused: ${name}`, () => {
      const r = reads(text, name === "an unknown target" ? "two" : undefined);
      assert.ok(!r.ok);
      assert.match(r.reason, why);
    });
  }
});
