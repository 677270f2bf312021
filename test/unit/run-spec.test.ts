// A RUN step kiln runs itself gets the user, groups, HOME and environment buildah would give it:
// the cases below are what buildah printed for `id` and `echo $HOME` on this machine.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { checkMountPoints, checkMountTarget, removeMountTarget, resolveUser, runEnv } from "../../src/fastpath/run-spec.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

describe("a RUN step's user and environment", () => {
  const dir = tempDir("run-spec");
  after(() => removeTree(dir));
  const rootfs = (name: string, files: Record<string, string>) => {
    const root = join(dir, name);
    mkdirSync(join(root, "etc"), { recursive: true });
    for (const [p, text] of Object.entries(files)) writeFileSync(join(root, p), text);
    return root;
  };
  const withUsers = rootfs("users", {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n",
    "etc/group": "root:x:0:\nnode:x:1000:\nextra:x:2000:node\n",
  });
  const bare = rootfs("bare", {});

  test("a name or a uid in /etc/passwd: its group, its supplementary groups, its home", () => {
    const want = { uid: 1000, gid: 1000, additionalGids: [1000, 2000], home: "/home/node" };
    assert.deepEqual(resolveUser(withUsers, "node"), want);
    assert.deepEqual(resolveUser(withUsers, "1000"), want);
  });
  test("a uid not in /etc/passwd: gid 0, HOME /", () => {
    assert.deepEqual(resolveUser(withUsers, "1234"), { uid: 1234, gid: 0, additionalGids: [0], home: "/" });
  });
  test("user:group takes that group alone", () => {
    assert.deepEqual(resolveUser(withUsers, "1000:55"), { uid: 1000, gid: 55, additionalGids: [], home: "/home/node" });
    assert.deepEqual(resolveUser(withUsers, "node:extra"), { uid: 1000, gid: 2000, additionalGids: [], home: "/home/node" });
  });
  test("no USER is root, with or without /etc/passwd", () => {
    assert.deepEqual(resolveUser(withUsers, ""), { uid: 0, gid: 0, additionalGids: [0], home: "/root" });
    assert.deepEqual(resolveUser(bare, ""), { uid: 0, gid: 0, additionalGids: [0], home: "/" });
  });
  test("a name the image does not have, or a symlinked /etc/passwd, is refused", () => {
    assert.throws(() => resolveUser(withUsers, "nobody"), /no user nobody/);
    const linked = rootfs("linked", {});
    symlinkSync("/etc/passwd", join(linked, "etc/passwd"));
    assert.throws(() => resolveUser(linked, "node"), /symlink/);
  });
  test("environment: the image's, the ENV steps' over it, PATH and HOME when missing, HOSTNAME", () => {
    const user = resolveUser(withUsers, "node");
    assert.deepEqual(runEnv(["A=1", "B=x=y"], [["A", "2"]], [], user, "abc"), ["A=2", "B=x=y", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/home/node", "HOSTNAME=abc"]);
    assert.deepEqual(runEnv(["PATH=/bin", "HOME=/h"], [], [], user, "abc"), ["PATH=/bin", "HOME=/h", "HOSTNAME=abc"]);
  });
  test("mount targets: missing parts are runc's to make; a symlink on the way is refused, before the step and after it (nothing outside the rootfs goes)", () => {
    const root = rootfs("targets", {});
    mkdirSync(join(root, "root/.npm"), { recursive: true });
    writeFileSync(join(root, "root/.npmrc"), "x");
    checkMountTarget(root, "/root/.npm", "directory");
    checkMountTarget(root, "/opt/missing/cache", "directory");
    checkMountTarget(root, "/root/.npmrc", "file");
    assert.throws(() => checkMountTarget(root, "/root/.npmrc", "directory"), /not a plain directory/);
    const outside = join(dir, "outside");
    mkdirSync(join(outside, "cache"), { recursive: true });
    writeFileSync(join(outside, "cache", "keep"), "keep");
    symlinkSync(outside, join(root, "link"));
    assert.throws(() => checkMountTarget(root, "/link/cache", "directory"), /not a plain directory/);
    assert.throws(() => removeMountTarget(root, "/link/cache"), /not plain directories/);
    assert.ok(existsSync(join(outside, "cache", "keep")));
    removeMountTarget(root, "/root/.npm");
    assert.ok(!existsSync(join(root, "root/.npm")));
  });
  test("mount points: an image without /etc/hosts (buildah would create it in the layer) is refused", () => {
    assert.throws(() => checkMountPoints(bare), /no plain \/proc/);
    for (const d of ["proc", "sys", "dev"]) mkdirSync(join(bare, d));
    assert.throws(() => checkMountPoints(bare), /no plain \/etc\/hosts/);
    for (const f of ["etc/hosts", "etc/resolv.conf", "etc/hostname"]) writeFileSync(join(bare, f), "");
    checkMountPoints(bare);
  });
});
