// The lock kiln holds while a RUN with a sharing=locked cache mount runs: a POSIX write lock on
// buildah's lock file (what containers/storage's lockfile takes), taken before the command starts
// and held by the command itself, across exec, until it exits.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { runcCommand } from "../../src/podman/runc.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

/** Tries the write lock without waiting, as another process: true when it got it. */
function tryLock(file: string): boolean {
  const script = 'use Fcntl; open(my $f, ">>", $ARGV[0]) or die; my $l = pack("ssx4qqix4", F_WRLCK, 0, 0, 0, 0); exit(fcntl($f, F_SETLK, $l) ? 0 : 3)';
  const r = spawnSync("perl", ["-e", script, file]);
  assert.ok(r.status === 0 || r.status === 3, String(r.stderr));
  return r.status === 0;
}

describe("cache-mount lock", () => {
  const children: ChildProcess[] = [];
  test("no lock: runc itself", () => {
    assert.deepEqual(runcCommand(["run", "x"], []), { file: "runc", args: ["run", "x"] });
  });

  test("the command holds the lock from before it starts until it exits", async () => {
    const dir = tempDir("cache-lock");
    try {
      const lock = join(dir, "buildah-cache-lockfile");
      const c = runcCommand(["run", "x"], [lock]);
      assert.equal(c.file, "perl");
      // The same command line with a stand-in for runc that says it runs, then waits for stdin.
      const args = [...c.args.slice(0, c.args.indexOf("--") + 1), "sh", "-c", "echo running; read x; exit 0"];
      const child = spawn(c.file, args, { stdio: ["pipe", "pipe", "inherit"] });
      children.push(child);
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      assert.equal(tryLock(lock), false, "another process cannot take the lock while the command runs");
      child.stdin.end();
      const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
      assert.equal(code, 0);
      assert.equal(tryLock(lock), true, "the lock is free once the command exited");
    } finally {
      for (const p of children.splice(0)) p.kill("SIGKILL");
      removeTree(dir);
    }
  });

  test("a lock held elsewhere makes the command wait for it", async () => {
    const dir = tempDir("cache-lock");
    try {
      const lock = join(dir, "buildah-cache-lockfile");
      const c = runcCommand([], [lock]);
      const holder = spawn(c.file, [...c.args.slice(0, -1), "sh", "-c", `echo held; read x; touch ${join(dir, "released")}`], { stdio: ["pipe", "pipe", "inherit"] });
      children.push(holder);
      await new Promise<void>((resolve) => holder.stdout.once("data", () => resolve()));
      const waiter = spawn(c.file, [...c.args.slice(0, -1), "sh", "-c", `test -e ${join(dir, "released")} && echo after || echo before`], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      waiter.stdout.on("data", (d) => (out += String(d)));
      // The kernel lists a waiting lock request with "->" in /proc/locks.
      await waitFor(() => readFileSync("/proc/locks", "utf8").split("\n").some((l) => l.includes("->") && l.includes(` ${waiter.pid} `)), 10_000, "the command waiting for the lock");
      holder.stdin.end();
      await new Promise((resolve) => waiter.once("exit", resolve));
      assert.equal(out, "after\n", "the command ran once the holder let go");
    } finally {
      for (const p of children.splice(0)) p.kill("SIGKILL");
      removeTree(dir);
    }
  });
});
