// kiln's base layer store against podman's own pull: every layer kiln unpacks for buildah must be
// what containers/storage would have made of it, file by file (type, mode, owner, size, content,
// mtime, link target, device, xattrs, hard links). Held on the Node.js base image and on an image
// whose layers are made of the odd cases (whiteouts, opaque directories, devices, capabilities,
// owners, long and non-ASCII names, parents without entries, nanosecond times). Then the store's
// refusals, its collection after a removal, and a build through kilnd on it.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { createBaseLayerStore, type BaseLayerStore, type EnsureOptions } from "../../src/images/layer-store.js";
import { OCI_CONFIG, OCI_LAYER_GZIP, RegistryClient, sha256 } from "../../src/registry/client.js";
import { makeRepo } from "../helpers/git-repo.js";
import { startKilnd } from "../helpers/kilnd.js";
import { logText } from "../helpers/logs.js";
import { startRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const REGISTRY = process.env.KILN_REGISTRY ?? "127.0.0.1:5000";
const PATH_ENV = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" };

/** A podman storage of its own: with kiln's store as its additional layer store, or without. */
function storage(dir: string, layerStore?: string): { env: NodeJS.ProcessEnv; graph: string } {
  const graph = join(dir, "graph");
  mkdirSync(graph, { recursive: true });
  mkdirSync(join(dir, "run"), { recursive: true });
  const conf = join(dir, "storage.conf");
  writeFileSync(
    conf,
    [
      "[storage]",
      'driver = "overlay"',
      `graphroot = ${JSON.stringify(graph)}`,
      `runroot = ${JSON.stringify(join(dir, "run"))}`,
      ...(layerStore ? ["[storage.options]", `additionallayerstores = [${JSON.stringify(layerStore)}]`] : []),
      "[storage.options.overlay]",
      'mountopt = "nodev"',
      "",
    ].join("\n"),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_STORAGE_CONF: conf };
  delete env.CONTAINERS_CONF;
  return { env, graph };
}

function podman(env: NodeJS.ProcessEnv, args: string[]): string {
  const r = spawnSync("podman", args, { env, encoding: "utf8" });
  assert.equal(r.status, 0, `podman ${args.join(" ")}: ${r.stderr}`);
  return r.stderr;
}

/** Each layer's diff directory in a storage, by its diff_id. */
function diffDirs(graph: string): Map<string, string> {
  const layers = JSON.parse(readFileSync(join(graph, "overlay-layers", "layers.json"), "utf8")) as { id: string; "diff-digest": string }[];
  return new Map(layers.map((l) => [l["diff-digest"], realpathSync(join(graph, "overlay", l.id, "diff"))]));
}

/**
 * One line per file: everything storage decides about it. The root, and directories the tar has
 * no entry for, get "now" as their mtime in both.
 */
const MADE_NOW = new Set([".", "implicit", "implicit/x"]);
function listTree(root: string): string[] {
  const xattrs = new Map<string, string[]>();
  const dump = spawnSync("getfattr", ["--recursive", "--physical", "--dump", "--match=-", "--absolute-names", "--encoding=hex", root], { encoding: "utf8" }).stdout;
  let current = "";
  for (const line of dump.split("\n")) {
    if (line.startsWith("# file: ")) current = line.slice(8);
    else if (line.trim()) xattrs.set(current, [...(xattrs.get(current) ?? []), line]);
  }
  const out: string[] = [];
  const inodes = new Map<bigint, string>();
  const walk = (path: string, rel: string) => {
    const st = lstatSync(path, { bigint: true });
    const kind = st.isDirectory() ? "d" : st.isFile() ? "f" : st.isSymbolicLink() ? "l" : st.isCharacterDevice() ? "c" : st.isBlockDevice() ? "b" : st.isFIFO() ? "p" : "?";
    let what = "";
    if (kind === "f") {
      what = createHash("sha256").update(readFileSync(path)).digest("hex").slice(0, 16);
      if (st.nlink > 1n) {
        const first = inodes.get(st.ino);
        if (first) what += ` link-of ${first}`;
        else inodes.set(st.ino, rel);
      }
    } else if (kind === "l") what = readlinkSync(path);
    else if (kind === "c" || kind === "b") what = `rdev ${st.rdev}`;
    // A whiteout's own time is when it was made, in podman's storage and in kiln's alike.
    const mtime = MADE_NOW.has(rel) || (kind === "c" && st.rdev === 0n) ? "-" : String(st.mtimeNs);
    out.push(`${rel} ${kind} ${(st.mode & 0o7777n).toString(8)} ${st.uid}:${st.gid} ${kind === "d" ? "-" : st.size} ${mtime} ${what} ${(xattrs.get(path) ?? []).sort().join(" ")}`);
    if (kind === "d") for (const name of readdirSync(path).sort()) walk(join(path, name), rel === "." ? name : `${rel}/${name}`);
  };
  walk(root, ".");
  return out;
}

const sh = (cmd: string, args: string[], cwd?: string) => execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });

/** Pushes an image of these layer tars (each made by GNU tar in a staging directory). */
async function pushImage(repo: string, tag: string, tars: Buffer[]): Promise<string> {
  const client = new RegistryClient(REGISTRY, repo, true);
  const layers = [];
  for (const tar of tars) {
    const gz = gzipSync(tar);
    const digest = sha256(gz);
    await client.putBlob(digest, gz);
    layers.push({ mediaType: OCI_LAYER_GZIP, digest, size: gz.length, diffId: sha256(tar) });
  }
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) }, history: layers.map((_, i) => ({ created_by: `test layer ${i + 1}` })) }));
  await client.putBlob(sha256(config), config);
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length }, layers: layers.map(({ diffId: _, ...l }) => l) }),
  );
  return client.putManifest(tag, manifest);
}

/** The odd cases, in two layers: the second whites out and makes opaque what the first has. */
function oddLayers(dir: string): Buffer[] {
  const one = join(dir, "one");
  const two = join(dir, "two");
  const script = `
set -e
cd ${one}
mkdir -p etc bin dir-0500/inner opaque/keep gone-dir/sub sticky deep/a/b/c implicit/x/y
echo hello > etc/motd; echo old > opaque/keep/file; echo bye > gone-file; echo sub > gone-dir/sub/f
printf '#!/bin/sh\\necho hi\\n' > bin/tool; chmod 4755 bin/tool
echo g > bin/sgid; chmod 2711 bin/sgid
chmod 1777 sticky; echo no > dir-0500/inner/secret; chmod 000 dir-0500/inner/secret; chmod 0500 dir-0500
echo shared > bin/hard-a; ln bin/hard-a bin/hard-b
ln -s ../etc/motd bin/rel-link; ln -s /etc/motd bin/abs-link; ln -s /nowhere bin/dangling
mkfifo bin/fifo; mknod bin/null c 1 3; mknod bin/loop b 7 0
echo cap > bin/cap; setfattr -n security.capability -v 0x0100000200040000000000000000000000000000 bin/cap
setfattr -n user.note -v "a note" etc/motd
echo u > etc/owned-1000; chown 1000:1000 etc/owned-1000
echo n > etc/owned-nobody; chown 65534:65534 etc/owned-nobody
echo big > etc/owned-big; chown 100000:100001 etc/owned-big
echo long > "deep/a/b/c/$(printf 'n%.0s' $(seq 1 150))"
echo cafe > "etc/café ☕.txt"; : > etc/empty
echo deep > implicit/x/y/file
touch -h -d '2001-02-03 04:05:06.123456789' etc/motd bin/rel-link dir-0500 deep/a
cd ${two}
mkdir -p opaque/new
touch .wh.gone-file .wh.gone-dir opaque/.wh..wh..opq
echo new > opaque/new/file
echo again > etc-again; ln etc-again etc-again-link
touch -d '2002-03-04 05:06:07.5' opaque
`;
  mkdirSync(one, { recursive: true });
  mkdirSync(two, { recursive: true });
  sh("sh", ["-c", script]);
  const tar = (cwd: string, members: string[]) => execFileSync("tar", ["--create", "--file=-", "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--no-recursion", ...members], { cwd, maxBuffer: 64 << 20 });
  const all = (cwd: string) => execFileSync("find", [".", "-mindepth", "1"], { cwd, encoding: "utf8" }).trim().split("\n").sort();
  // implicit/ and implicit/x/ have no entry of their own: unpacking makes them.
  const first = all(one).filter((p) => p !== "./implicit" && p !== "./implicit/x");
  return [tar(one, first), tar(two, all(two))];
}

describe("kiln's base layer store", () => {
  let dir: string, store: BaseLayerStore;
  const said: string[] = [];
  const ensureOptions = (): EnsureOptions => {
    said.length = 0;
    return { credentials: { authFile: () => undefined, lookup: async () => undefined, passwords: [] }, insecure: new Set([REGISTRY]), signal: new AbortController().signal, env: PATH_ENV, say: (l) => said.push(l) };
  };
  let oddRef: string, oddDigest: string, nodeDigest: string;

  before(async () => {
    const r = spawnSync(join(ROOT, "scripts/base-images.sh"), ["node"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    dir = tempDir("base-layers");
    const tag = `t${Date.now()}`;
    oddRef = `${REGISTRY}/test/odd-layers:${tag}`;
    oddDigest = await pushImage("test/odd-layers", tag, oddLayers(join(dir, "stage")));
    nodeDigest = (await new RegistryClient(REGISTRY, "kiln/node", true).headManifest("20-slim"))!;
  });
  after(() => {
    if (dir) removeTree(dir);
  });

  test("every layer kiln unpacks is the one podman's pull makes, file by file", async () => {
    const theirs = storage(join(dir, "podman"));
    const ours = storage(join(dir, "kiln"), join(dir, "kiln", "layers"));
    mkdirSync(join(dir, "kiln", "layers"), { recursive: true });
    store = createBaseLayerStore(join(dir, "kiln", "layers"), ours.graph);
    const images = [
      { reference: oddRef, digest: oddDigest },
      { reference: `${REGISTRY}/kiln/node:20-slim`, digest: nodeDigest },
    ];
    // Both images in one call, as a multi-stage build's bases are: unpacked side by side.
    const report = await store.ensure(images, ensureOptions());
    report.release();
    for (const { reference } of images) {
      const mine = said.filter((l) => l.startsWith(`${reference}: `)).join("\n");
      assert.match(mine, /unpacking \d+ of \d+ layers[^]*unpacked by kiln/, said.join("\n"));
    }
    for (const { reference: ref, digest } of images) {
      podman(theirs.env, ["pull", "-q", "--tls-verify=false", `${ref}@${digest}`]);
      const notices = podman(ours.env, ["pull", "-q", "--tls-verify=false", `${ref}@${digest}`]);
      // Taken from the store, not downloaded: storage links each layer to kiln's directory.
      assert.doesNotMatch(notices, /during use/, "the store answers storage's use notice quietly");
    }
    const a = diffDirs(theirs.graph);
    const b = diffDirs(ours.graph);
    assert.equal(b.size, a.size);
    for (const [diffId, theirDir] of a) {
      const ourDir = b.get(diffId);
      assert.ok(ourDir?.startsWith(join(dir, "kiln", "layers")), `${diffId} is linked from kiln's store (${ourDir})`);
      const want = listTree(theirDir);
      const got = listTree(ourDir!);
      assert.deepEqual(got, want, `layer ${diffId}`);
    }
    // The odd cases really are in what was compared.
    const odd = listTree([...b.values()].find((d) => lstatSync(join(d, "gone-file"), { throwIfNoEntry: false })?.isCharacterDevice())!);
    assert.ok(odd.some((l) => /^opaque d .*trusted\.overlay\.opaque=0x79/.test(l)), odd.join("\n"));
    assert.ok(odd.some((l) => /^gone-dir c 0 0:0 0 - rdev 0/.test(l)), odd.join("\n"));
  });

  test("an image built on kiln's layers, then removed: its layers are collected, the base's stay", async () => {
    const ours = storage(join(dir, "kiln"), join(dir, "kiln", "layers"));
    const ctx = join(dir, "ctx");
    mkdirSync(ctx, { recursive: true });
    writeFileSync(join(ctx, "Containerfile"), `FROM ${oddRef}@${oddDigest}\nCOPY Containerfile /copied\n`);
    podman(ours.env, ["build", "-q", "--runtime", "runc", "-t", "odd-child", ctx]);
    const mount = spawnSync("podman", ["image", "mount", "odd-child"], { env: ours.env, encoding: "utf8" }).stdout.trim();
    assert.ok(existsSync(join(mount, "etc", "motd")) && !existsSync(join(mount, "gone-file")) && existsSync(join(mount, "opaque", "new", "file")) && !existsSync(join(mount, "opaque", "keep")));
    podman(ours.env, ["image", "unmount", "odd-child"]);
    const before = readdirSync(join(dir, "kiln", "layers")).filter((n) => n.startsWith("sha256:"));
    assert.equal(await store.collect(), 0, "every layer is in use");
    podman(ours.env, ["rmi", "odd-child", `${oddRef}@${oddDigest}`]);
    assert.equal(await store.collect(), 2, "the odd image's two layers");
    const left = readdirSync(join(dir, "kiln", "layers")).filter((n) => n.startsWith("sha256:"));
    assert.equal(left.length, before.length - 2);
    // The base's layers are whole: a build on it still runs.
    const nodeCtx = join(dir, "node-ctx");
    mkdirSync(nodeCtx, { recursive: true });
    writeFileSync(join(nodeCtx, "Containerfile"), `FROM ${REGISTRY}/kiln/node:20-slim@${nodeDigest}\nRUN node -e "require('fs').writeFileSync('/ok', process.version)"\n`);
    podman(ours.env, ["build", "-q", "--runtime", "runc", "-t", "node-child", nodeCtx]);
  });

  test("a layer kiln cannot be sure of is left to buildah's pull, and nothing of it stays", async () => {
    const clash = join(dir, "clash");
    mkdirSync(clash, { recursive: true });
    writeFileSync(join(clash, "x"), "x\n");
    writeFileSync(join(clash, ".wh.x"), "");
    const tar = execFileSync("tar", ["--create", "--file=-", "--format=pax", "x", ".wh.x"], { cwd: clash });
    const tag = `clash${Date.now()}`;
    const digest = await pushImage("test/odd-layers", tag, [tar]);
    const report = await store.ensure([{ reference: `${REGISTRY}/test/odd-layers:${tag}`, digest }], ensureOptions());
    report.release();
    assert.match(said.join("\n"), /both in the layer and whited out; buildah pulls it/);
    assert.deepEqual(readdirSync(join(dir, "kiln", "layers")).filter((n) => n.startsWith(".incoming-") || n === sha256(gzipSync(tar))), []);
    // A tag the store was never given (not in a registry kiln knows): said, nothing done.
    (await store.ensure([{ reference: "localhost/some/image:1", digest }], ensureOptions())).release();
    assert.match(said.join("\n"), /not in a registry; buildah pulls it/);
  });

  test("kilnd: a cold build unpacks its base itself, pushes it to another registry whole, and logs no store notices", async () => {
    const repo = makeRepo(join(dir, "app"), { Containerfile: `FROM ${oddRef}\nCOPY hello /hello\n`, hello: "hello\n" });
    // Another registry: the push uploads the base's layers from kiln's store (storage's blob of them).
    const other = await startRegistry(join(dir, "other-registry"));
    const k = await startKilnd({ data: join(dir, "data"), registry: REGISTRY, args: ["--insecure-registry", other.host] });
    try {
      const b = await k.buildCommit({ project: "odd", url: repo.url, commit: repo.head(), image: `${other.host}/test/odd-app` });
      assert.equal(b.state, BuildState.SUCCEEDED, b.error);
      const log = await logText(k, b.id);
      assert.match(log, /base: .*odd-layers.* 2 of 2 layers .* unpacked by kiln/);
      assert.doesNotMatch(log, /Additional Layer Store/);
      // podman compresses the layers again for a registry that lacks them: the digests are new,
      // the tars (the diff_ids) are the base's.
      const diffIds = async (client: RegistryClient, ref: string) => {
        const m = await client.getManifest(ref);
        for (const l of m.manifest.layers) await client.getBlob(l.digest);
        return (JSON.parse((await client.getBlob(m.manifest.config.digest)).toString("utf8")) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;
      };
      const pushed = await diffIds(new RegistryClient(other.host, "test/odd-app", true), repo.head());
      const base = await diffIds(new RegistryClient(REGISTRY, "test/odd-layers", true), oddDigest);
      assert.equal(pushed.length, 3);
      assert.deepEqual(pushed.slice(0, 2), base);
    } finally {
      await k.stop();
      await other.stop();
    }
  });
});
