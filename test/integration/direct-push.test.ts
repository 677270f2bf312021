// kiln's own push of a full build (builds/direct-push.ts), held to podman's: the same local image
// pushed by podman push is the referee. Both must give the same config (the local image's ID) and
// the same layers once uncompressed (each its diff ID), whiteouts, links and owners included; a
// warm build uploads only the layers it made; a layer storage cannot give back as its diff ID's
// tar fails the push before anything is tagged; one it has no record of is left to podman's push.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { DirectPushRefused, pushStoredImage } from "../../src/builds/direct-push.js";
import { KilnError } from "../../src/errors/kiln-error.js";
import { readStoredImage } from "../../src/podman/stored-image.js";
import { BLOB_NOTES_DIR, createBlobNotes } from "../../src/registry/blob-notes.js";
import { DOCKER_LAYER_GZIP, DOCKER_MANIFEST, RegistryClient, sha256 } from "../../src/registry/client.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { fsDifferences, viewImage } from "../helpers/image-fs.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { kilndPodmanEnv } from "../helpers/leftovers.js";
import { logText } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

// Layers of every kind a push must give back: files in a new directory, a file deleted from an
// earlier layer (a whiteout), a directory emptied and refilled (opaque), a symlink, a hard link,
// an owner that is not root, an empty file, a file in the base changed.
const CONTAINERFILE = (base: string) => `FROM ${base}
RUN mkdir -p /app/gone /app/keep && echo one > /app/one && echo x > /app/gone/x && echo y > /app/keep/y
COPY data/ /data/
RUN rm -rf /app/gone /app/one && rm -rf /app/keep && mkdir /app/keep && echo z > /app/keep/z && ln -s /data/a /app/link && ln /data/a /app/hard && touch /app/empty && chown 1000:1000 /app/keep/z && echo changed >> /etc/hostname
LABEL user.label="kept"
CMD ["cat", "/data/a"]
`;

describe("kiln's push of full builds", () => {
  let dir: string, reg: TestRegistry, k: TestKilnd, repo: TestRepo;
  const data = () => join(dir, "data");
  const graphRoot = () => join(data(), "storage");

  before(async () => {
    dir = tempDir("direct-push");
    reg = await startRegistry(join(dir, "registry"));
    const base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), { Containerfile: CONTAINERFILE(base), "data/a": "a\n", "data/b": "" });
    // Every build a full build: the push under test is the full build's.
    k = await startKilnd({ data: data(), registry: reg.host, args: ["--fast-path", "off"] });
  });
  after(async () => {
    await k?.stop();
    await reg?.stop();
    if (dir) removeTree(dir);
  });

  const build = async (commit: string) => {
    const b = await k.buildCommit({ project: "direct", url: repo.url, commit, image: `${reg.host}/test/direct` });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    return { b, log: await logText(k, b.id) };
  };
  /** The pushed image's layers, each gunzipped and hashed. */
  const uncompressed = async (repoName: string, tag: string) => {
    const client = new RegistryClient(reg.host, repoName, true);
    const { manifest } = await client.getManifest(tag);
    const digests = await Promise.all(manifest.layers.map(async (l) => sha256(gunzipSync(await client.getBlob(l.digest)))));
    return { manifest, digests };
  };
  /** podman push of the local image, as kiln pushed before (the referee). */
  const podmanPush = (imageId: string, tag: string) =>
    execFileSync("podman", ["push", "--tls-verify=false", "--format", "v2s2", "--", imageId.replace(/^sha256:/, ""), `docker://${reg.host}/test/referee:${tag}`], { env: kilndPodmanEnv(data()), stdio: "pipe" });

  let firstLayers: string[] = [];
  test("the pushed image is the local image: its config byte for byte, each layer its diff ID's tar; podman's push of it is the same image", async () => {
    const { b, log } = await build(repo.head());
    assert.match(log, /push: kiln's push is done \(\d+ layers? compressed and uploaded( \(\d+ while buildah ran\))?, \d+ bytes\)/);
    assert.doesNotMatch(log, /podman push/);
    const ours = await uncompressed("test/direct", b.commit);
    assert.equal(ours.manifest.mediaType, DOCKER_MANIFEST);
    assert.ok(ours.manifest.layers.every((l) => l.mediaType === DOCKER_LAYER_GZIP));
    assert.equal(ours.manifest.config.digest, b.imageId, "the registry's image has the local image's ID");
    const view = await viewImage(reg.host, "test/direct", b.commit);
    assert.deepEqual(ours.digests, view.config.rootfs.diff_ids, "every layer uncompressed is its diff ID's tar");
    firstLayers = ours.digests;

    podmanPush(b.imageId, b.commit);
    const theirs = await uncompressed("test/referee", b.commit);
    assert.equal(theirs.manifest.config.digest, ours.manifest.config.digest, "podman pushes the same config");
    assert.deepEqual(theirs.digests, ours.digests, "and the same layers");
    assert.deepEqual(fsDifferences(view.files, (await viewImage(reg.host, "test/referee", b.commit)).files), []);
    // What the RUN steps did, as a container sees it.
    assert.equal(view.files.has("app/one"), false);
    assert.equal(view.files.has("app/gone"), false);
    assert.equal(view.files.has("app/keep/y"), false);
    assert.equal(view.files.get("app/keep/z")?.uid, 1000);
    assert.equal(view.files.get("app/link")?.type, "symlink");
    assert.ok(view.files.has("app/hard") && view.files.has("app/empty"));
  });

  test("a warm build uploads only the layers it made; the rest are the blobs kiln pushed before", async () => {
    const { b, log } = await build(repo.commit({ "data/a": "a, changed\n" }));
    const ours = await uncompressed("test/direct", b.commit);
    const made = ours.digests.filter((d) => !firstLayers.includes(d)).length;
    assert.equal(made, 2, "the COPY and the RUN after it");
    // Both sent while buildah ran the steps after them (LABEL, CMD: here, metadata).
    assert.match(log, new RegExp(`push: kiln's push is done \\(${made} layers compressed and uploaded \\(${made} while buildah ran\\), \\d+ bytes\\)`));
    podmanPush(b.imageId, b.commit);
    assert.deepEqual((await uncompressed("test/referee", b.commit)).digests, ours.digests);
  });

  test("the same commit again: every layer is in the registry, and the digest is the first push's", async () => {
    const head = repo.head();
    const before = await reg.digest("test/direct", head);
    const { b, log } = await build(head);
    assert.match(log, /push: kiln's push is done \(every layer was in the registry\)/);
    assert.equal(b.imageDigest, before, "kiln compresses a tar the same way every time");
  });

  test("a layer whose files are not its diff ID's tar fails the push, one storage has no record of is refused, before the tag moves", async () => {
    const head = repo.head();
    const tagged = await reg.digest("test/direct", head);
    const { b } = await build(head);
    const image = await readStoredImage(graphRoot(), b.imageId);
    const top = image.layers.at(-1)!;
    const client = (signal: AbortSignal) => new RegistryClient(reg.host, "test/direct", true, { signal });
    // No note: the layer is compressed again from storage.
    const notes = createBlobNotes(join(dir, "no-notes"));
    const push = () =>
      pushStoredImage({ graphRoot: graphRoot(), imageId: b.imageId, client, tag: head, format: "docker", notes, mountFrom: [], storedBlob: () => "/nonexistent", deadlineMs: () => 30_000, signal: new AbortController().signal });
    const diff = join(graphRoot(), "overlay", top.id, "diff");
    // The same size: the record says how many bytes of the file the tar holds.
    writeFileSync(join(diff, "app", "keep", "z"), "Z\n");
    await assert.rejects(push(), (e) => e instanceof KilnError && /^container storage is damaged: layer \w+'s files are not the tar its image records/.test(e.message));
    const record = join(graphRoot(), "overlay-layers", `${top.id}.tar-split.gz`);
    renameSync(record, `${record}.away`);
    await assert.rejects(push(), (e) => e instanceof DirectPushRefused && /has no tar-split record/.test(e.message));
    renameSync(`${record}.away`, record);
    writeFileSync(join(diff, "app", "keep", "z"), "z\n");
    assert.equal(await reg.digest("test/direct", head), tagged, "the tag did not move");
  });

  test("what kiln's push cannot do, podman's does: the build says so and succeeds", async () => {
    const head = repo.head();
    const { b } = await build(head);
    const top = (await readStoredImage(graphRoot(), b.imageId)).layers.at(-1)!;
    rmSync(join(graphRoot(), BLOB_NOTES_DIR), { recursive: true, force: true });
    const record = join(graphRoot(), "overlay-layers", `${top.id}.tar-split.gz`);
    renameSync(record, `${record}.away`);
    try {
      const again = await build(head);
      assert.match(again.log, /push: kiln's own push gave way to podman's: layer \w+ has no tar-split record\npush: podman push /);
      assert.equal(again.b.imageDigest, await reg.digest("test/direct", head));
    } finally {
      renameSync(`${record}.away`, record);
    }
  });
});
