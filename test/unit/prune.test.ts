// Which images the keep policy sees as kiln's and in what order, from podman's listing and
// kilnd's records: a commit built again gives the image it gave before (kiln's labels are the
// commit's), so an image ranks by the newest build that gave it, not by its own time.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { kilnLabels } from "../../src/podman/kiln-labels.js";
import type { PodmanImage } from "../../src/podman/cli.js";
import { stageTag } from "../../src/podman/stage-images.js";
import { kilnImagesOf, selectForPrune, stageTagsOf, type ImageBuild } from "../../src/storage/prune.js";

const sha = (c: string) => c.repeat(40);
const id = (c: string) => c.repeat(64);
const image = (c: string, created: number, project = "app", names = [`r/${project}:${sha(c)}`]): PodmanImage => ({
  Id: id(c),
  Names: names,
  Size: 1,
  Created: created,
  Labels: kilnLabels({ project, source: "file:///repo", commit: sha(c), committed: new Date(created * 1000) }),
});

describe("the keep policy's view of storage", () => {
  test("an image built again ranks by that build: with keep 2, the rebuilt oldest stays and the one in between goes", () => {
    // Commits a, b, c built at 100, 200, 300 s; a built again at 400 s took every step from the cache (same image, created 100).
    const rows = [image("a", 100), image("b", 200), image("c", 300)];
    const builds = new Map<string, ImageBuild>([
      [`sha256:${id("a")}`, { id: "build-4", ms: 400_000 }],
      [`sha256:${id("b")}`, { id: "build-2", ms: 200_000 }],
      [`sha256:${id("c")}`, { id: "build-3", ms: 300_000 }],
    ]);
    const all = kilnImagesOf(rows, "app", builds);
    assert.deepEqual(all.map((i) => i.commit), [sha("a"), sha("c"), sha("b")]);
    assert.deepEqual(all.map((i) => i.build?.id), ["build-4", "build-3", "build-2"]);
    assert.deepEqual(selectForPrune(all, 2).map((i) => i.commit), [sha("b")]);
    // Without records (trimmed, or a new volume's kilnd), the image's own time decides.
    assert.deepEqual(selectForPrune(kilnImagesOf(rows, "app"), 2).map((i) => i.commit), [sha("a")]);
  });

  test("only final images with all of kiln's labels, of the project asked for; untagged ones always go", () => {
    const partial = { ...image("d", 500), Labels: { "kiln.managed": "true", "kiln.project": "app", "org.opencontainers.image.revision": sha("d") } };
    const base: PodmanImage = { Id: id("e"), Names: ["localhost/base:1"], Size: 1, Created: 600, Labels: null };
    const rows = [image("a", 100), image("b", 200, "other"), partial, base, image("f", 300, "app", [])];
    const all = kilnImagesOf(rows, "app");
    assert.deepEqual(all.map((i) => i.commit), [sha("f"), sha("a")], "the --label fallback's step between labels and the base image are not kiln's");
    assert.deepEqual(selectForPrune(all, 5).map((i) => i.commit), [sha("f")]);
    assert.equal(kilnImagesOf(rows).length, 3);
  });

  test("stage tags name their project and commit", () => {
    const rows: PodmanImage[] = [{ Id: id("9"), Names: [stageTag("app", sha("a"), 1), stageTag("my.app-2", sha("b"), 12), "localhost/kiln-stage/app:latest"], Size: 1, Created: 1 }];
    assert.deepEqual(stageTagsOf(rows), [
      { name: `localhost/kiln-stage/app:${sha("a")}-1`, project: "app", commit: sha("a"), id: id("9").replace(/^sha256:/, "") },
      { name: `localhost/kiln-stage/my.app-2:${sha("b")}-12`, project: "my.app-2", commit: sha("b"), id: id("9").replace(/^sha256:/, "") },
    ]);
  });
});
