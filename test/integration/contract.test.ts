// The shared contract check (../shared/contract/smoke.sh): drives kilnd from outside exactly as
// a control plane will. Skipped, saying so, where the shared folder is not beside the project.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";

const ROOT = new URL("../..", import.meta.url).pathname;
const SMOKE = new URL("../../../shared/contract/smoke.sh", import.meta.url).pathname;

test("the contract smoke check passes", { skip: existsSync(SMOKE) ? false : `no ${SMOKE} beside the project` }, () => {
  const r = spawnSync(SMOKE, { cwd: ROOT, encoding: "utf8", timeout: 300_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /contract smoke: ok/);
});
