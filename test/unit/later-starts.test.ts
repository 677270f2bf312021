// The fast path's later starts after a build that started from an earlier COPY: which are carried
// onto the build's snapshots, on how many of its upper directories, and which are dropped.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { CopyBase } from "../../src/fastpath/base.js";
import { laterStarts } from "../../src/fastpath/later-starts.js";
import type { AfterStep } from "../../src/fastpath/plan.js";

const run = (command: string): AfterStep => ({ command, env: [], args: [], cache: [], secrets: [], history: `/bin/sh -c ${command}` });
const copyOf = (src: string): AfterStep => ({ copy: { sources: [src], dest: "./" } });
const parent = (id: string, layers?: string[]) => ({ id, env: [`FROM_${id}=1`], user: "", workdir: "/app", ...(layers ? { layers } : {}) });
const start = (copyStep: number, after: AfterStep[], p?: ReturnType<typeof parent>): CopyBase =>
  ({ plan: { sources: [], dest: "./", chown: false, earlier: [], steps: { total: 9, reused: copyStep - 2 }, onbuild: 0, after, copyStep }, dest: "/app/", ancestors: [], owner: { uid: 0, gid: 0 }, copies: [], ...(p ? { parent: p } : {}) }) as CopyBase;

// COPY package.json (4), RUN npm ci, COPY tsconfig.json (6), COPY src/ (7), RUN build.
const build = run("npm run build");
const pkg = start(4, [run("npm ci"), copyOf("tsconfig.json"), copyOf("src"), build], parent("below-pkg"));
const tsconfig = start(6, [copyOf("src"), build], parent("below-tsconfig"));
const src = start(7, [build], parent("below-src"));

test("the later starts stand on the image below the COPY kiln started from and its own upper directories up to theirs", () => {
  const plan = laterStarts({ copy: src, starts: [tsconfig, pkg] }, pkg);
  // src's COPY is after[2]: the package.json COPY's upper, npm ci's, tsconfig.json's.
  assert.equal(plan.needed, 3);
  const next = plan.carry(["/s/0", "/s/1", "/s/2"]);
  assert.ok(!("refused" in next.copy));
  assert.deepEqual(next.copy.parent, { id: "below-pkg", env: ["FROM_below-src=1"], user: "", workdir: "/app", layers: ["/s/0", "/s/1", "/s/2"] });
  const [t, p] = next.starts;
  assert.deepEqual(t?.parent, { id: "below-pkg", env: ["FROM_below-tsconfig=1"], user: "", workdir: "/app", layers: ["/s/0", "/s/1"] });
  assert.equal(p, pkg, "the start kiln started from stays as it is");
});

test("a start from a snapshot parent adds its directories on top of the ones it stands on", () => {
  const onSnapshots = { ...tsconfig, parent: parent("below-pkg", ["/old/0", "/old/1"]) };
  const plan = laterStarts({ copy: src, starts: [onSnapshots, pkg] }, onSnapshots);
  // src's COPY is the first step after tsconfig.json's: only the tsconfig.json COPY's upper.
  assert.equal(plan.needed, 1);
  const next = plan.carry(["/new/0"]);
  assert.ok(!("refused" in next.copy));
  assert.deepEqual(next.copy.parent?.layers, ["/old/0", "/old/1", "/new/0"]);
  assert.equal(next.copy.parent?.id, "below-pkg");
});

test("nothing kept, or steps that do not line up: the later starts go, the earlier ones stay", () => {
  const none = laterStarts({ copy: src, starts: [tsconfig, pkg] }, pkg).carry([]);
  assert.ok("refused" in none.copy && /could not keep its own steps/.test(none.copy.refused));
  assert.deepEqual(none.starts, [pkg]);
  // A final COPY whose steps after it are not the last of the started COPY's (a different RUN).
  const other = start(7, [run("npm run other")], parent("below-src"));
  const plan = laterStarts({ copy: other, starts: [tsconfig, pkg] }, pkg);
  assert.equal(plan.needed, 2, "only tsconfig's start is carried");
  const next = plan.carry(["/s/0", "/s/1"]);
  assert.ok("refused" in next.copy);
  assert.deepEqual(next.starts.map((c) => c.plan.copyStep), [6, 4]);
});

test("a later start without RUN steps after it (no parent) is kept as it is; a refused final COPY stays refused", () => {
  const last = start(7, []);
  const plain = start(4, [copyOf("src")], parent("below-pkg"));
  const plan = laterStarts({ copy: last, starts: [plain] }, plain);
  assert.equal(plan.needed, 0);
  assert.equal(plan.carry([]).copy, last);
  const refused = laterStarts({ copy: { refused: "why" }, starts: [pkg] }, pkg).carry([]);
  assert.deepEqual(refused.copy, { refused: "why" });
});
