// The notes of the blobs kiln pushed for layers (registry/blob-notes.ts): read back as written,
// nothing from a file that is not a note, and collected once storage no longer has the layer.
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { collectBlobNotes, createBlobNotes } from "../../src/registry/blob-notes.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const dir = tempDir("blob-notes");
after(() => removeTree(dir));
const id = (c: string) => `sha256:${c.repeat(64)}`;

test("a note reads back as written; a damaged one, or a name that is no diff ID, is no note", async () => {
  const notes = createBlobNotes(join(dir, "a", "notes"));
  assert.equal(await notes.get(id("1")), undefined);
  await notes.put(id("1"), { digest: id("a"), size: 12 });
  assert.deepEqual(await notes.get(id("1")), { digest: id("a"), size: 12 });
  writeFileSync(join(dir, "a", "notes", "2".repeat(64)), "{not json");
  assert.equal(await notes.get(id("2")), undefined);
  writeFileSync(join(dir, "a", "notes", "3".repeat(64)), JSON.stringify({ digest: "md5:x", size: 1 }));
  assert.equal(await notes.get(id("3")), undefined);
  assert.equal(await notes.get("sha256:../../etc/passwd"), undefined);
  await notes.put("../x", { digest: id("a"), size: 1 });
  assert.deepEqual(readdirSync(join(dir, "a", "notes")).sort(), ["1".repeat(64), "2".repeat(64), "3".repeat(64)]);
});

test("collecting removes the notes of layers storage no longer has, and only those", async () => {
  const graphRoot = join(dir, "b");
  mkdirSync(join(graphRoot, "overlay-layers"), { recursive: true });
  writeFileSync(join(graphRoot, "overlay-layers", "layers.json"), JSON.stringify([{ id: "x", "diff-digest": id("4") }, { id: "y", "diff-digest": id("5") }]));
  const notesDir = join(graphRoot, "kiln-blob-notes");
  const notes = createBlobNotes(notesDir);
  for (const c of ["4", "5", "6"]) await notes.put(id(c), { digest: id("a"), size: 1 });
  assert.equal(await collectBlobNotes(notesDir, graphRoot), 1);
  assert.deepEqual(readdirSync(notesDir).sort(), ["4".repeat(64), "5".repeat(64)]);
  assert.equal(await collectBlobNotes(join(dir, "none"), graphRoot), 0, "no notes yet: nothing to do");
});
