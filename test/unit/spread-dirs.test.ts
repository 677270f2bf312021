// The top-directory hint on the volume's directories (src/storage/spread-dirs.ts): set on ext4,
// which our volumes are, and refused without harm elsewhere. Real chattr and lsattr.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { spreadDirectories } from "../../src/storage/spread-dirs.js";
import { tempDir } from "../helpers/tmp.js";

const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
const flags = (dir: string) => execFileSync("lsattr", ["-d", dir], { encoding: "utf8" }).split(/\s+/)[0]!;
const fsType = (dir: string) => execFileSync("stat", ["-f", "-c", "%T", dir], { encoding: "utf8" }).trim();

describe("spreadDirectories", () => {
  const dir = tempDir("spread");
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("on ext4 each directory, made if missing, carries the top-directory flag; its subdirectories do not inherit it", { skip: fsType(dir).startsWith("ext") ? false : `${dir} is on ${fsType(dir)}, not ext4` }, async () => {
    const dirs = [join(dir, "layers"), join(dir, "deep", "tmp")];
    mkdirSync(dirs[0]!);
    assert.equal(await spreadDirectories(dirs, env), undefined);
    for (const d of dirs) assert.match(flags(d), /T/, `${d} is a top directory`);
    const child = join(dirs[0]!, "a-layer");
    mkdirSync(child);
    assert.doesNotMatch(flags(child), /T/);
  });

  test("a filesystem without the flag (tmpfs) is said, not thrown, and the directories are still made", { skip: existsSync("/dev/shm") ? false : "no /dev/shm" }, async () => {
    const shm = join("/dev/shm", `kiln-test-spread-${process.pid}`);
    try {
      const why = await spreadDirectories([join(shm, "a")], env);
      assert.match(why ?? "", /not supported|Inappropriate ioctl/i);
      assert.ok(existsSync(join(shm, "a")));
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });
});
