// The one-shot command runner's account of a failure: a process a signal ended (one sent from
// outside kilnd, as a container runtime's stop to a whole process group does) is not reported as a
// plain non-zero exit, which callers could read as the command's answer. Real processes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { errorSummary, exec } from "../../src/process/exec.js";

const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };

describe("exec", () => {
  test("a process killed by a signal says which, with its last error line", async () => {
    const r = await exec("sh", ["-c", "echo 'Error: half an answer' >&2; kill -TERM $$"], { env, timeoutMs: 10_000 });
    assert.equal(r.signal, "SIGTERM");
    assert.equal(errorSummary(r), "killed by SIGTERM: Error: half an answer");
  });

  test("a process that exits non-zero is summarised by its last error line, else its exit code", async () => {
    const said = await exec("sh", ["-c", "echo 'Error: image not known' >&2; echo 'WARN later' >&2; exit 125"], { env, timeoutMs: 10_000 });
    assert.equal(said.signal, undefined);
    assert.equal(said.exitCode, 125);
    assert.equal(errorSummary(said), "Error: image not known");
    const silent = await exec("sh", ["-c", "exit 3"], { env, timeoutMs: 10_000 });
    assert.equal(errorSummary(silent), "exit code 3");
  });

  test("a deadline is named as such, not as the signal that enforced it", async () => {
    const r = await exec("sleep", ["5"], { env, timeoutMs: 100 });
    assert.equal(r.timedOut, true);
    assert.equal(errorSummary(r), "timed out");
  });
});
