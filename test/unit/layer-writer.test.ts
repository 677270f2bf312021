// The layer writer (tar packed, hashed and compressed in pieces as entries come) and the reading
// of a RUN step's upper directory into it: the blob must be the tar, whole and in order, however
// the entries arrive.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import tar from "tar-stream";
import { compress, createLayerWriter, type LayerEntry } from "../../src/fastpath/layer.js";
import { readUpper } from "../../src/fastpath/upper.js";

const mtime = new Date("2026-01-01T00:00:00Z");
const file = (name: string, body: Buffer): LayerEntry => ({ header: { name, type: "file", size: body.length, mode: 0o644, uid: 0, gid: 0, mtime }, body });
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function plainTar(entries: LayerEntry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) p.entry({ ...e.header }, e.body);
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** The gzip members of a blob: each starts with 1f 8b 08 (a piece's own header). */
const members = (gz: Buffer) => {
  let n = 0;
  for (let i = 0; i + 2 < gz.length; i++) if (gz[i] === 0x1f && gz[i + 1] === 0x8b && gz[i + 2] === 8) n++;
  return n;
};

describe("layer writer", () => {
  test("a layer of many pieces is the whole tar, in order, in several gzip members", async () => {
    // 14 MiB: incompressible pieces, compressible ones, and a tail shorter than a piece.
    const entries = [file("a.bin", randomBytes(5 * 1024 * 1024)), file("b.txt", Buffer.from("text\n".repeat(1_500_000))), file("c.bin", randomBytes(1_234_567)), ...Array.from({ length: 300 }, (_, i) => file(`d/${i}.txt`, Buffer.from(`${i}\n`)))];
    const plain = await plainTar(entries);
    const writer = createLayerWriter();
    for (const e of entries) writer.add(e);
    const layer = await writer.finish();
    assert.ok(gunzipSync(layer.gz).equals(plain), "the blob decompresses to the tar of the entries");
    assert.equal(layer.diffId, sha(plain));
    assert.equal(layer.digest, sha(layer.gz));
    assert.ok(members(layer.gz) >= Math.floor(plain.length / (4 * 1024 * 1024)), `one member per 4 MiB piece (${members(layer.gz)})`);
    // The same entries again: the same blob (a layer's digest depends on nothing but its entries).
    assert.equal((await compress(entries)).digest, layer.digest);
  });

  test("a small layer is one gzip member", async () => {
    const entries = [{ header: { name: "app/", type: "directory" as const, mode: 0o755, uid: 0, gid: 0, mtime } }, file("app/x.js", Buffer.from("x\n"))];
    const layer = await compress(entries);
    assert.ok(gunzipSync(layer.gz).equals(await plainTar(entries)));
    assert.equal(members(layer.gz), 1);
  });
});

describe("a RUN step's upper directory read into the writer", () => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-upper-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("the writer gets every entry as readUpper returns them, opaque markers right after their directories", async () => {
    const upper = join(dir, "upper");
    // Enough entries that the walk hands some over before it ends (it yields every 256).
    for (const d of ["a", "m", "z"]) {
      mkdirSync(join(upper, d, "sub"), { recursive: true });
      for (let i = 0; i < 200; i++) writeFileSync(join(upper, d, "sub", `f${i}`), `${d}${i}\n`);
    }
    linkSync(join(upper, "a/sub/f1"), join(upper, "z/hard"));
    execFileSync("mknod", [join(upper, "m/gone"), "c", "0", "0"]);
    execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(upper, "m/sub")]);
    execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", join(upper, "z")]);

    const given: LayerEntry[] = [];
    const read = await readUpper(upper, process.env as Record<string, string>, 1 << 30, new AbortController().signal, (e) => given.push(e));
    const names = read.entries.map((e) => e.header.name);
    assert.deepEqual(given.map((e) => e.header.name), names);
    assert.equal(names[names.indexOf("m/sub/") + 1], "m/sub/.wh..wh..opq");
    assert.equal(names[names.indexOf("z/") + 1], "z/.wh..wh..opq");
    assert.equal(names.filter((n) => n.endsWith(".wh..wh..opq")).length, 2);
    assert.ok(names.includes("m/.wh.gone"));
    assert.equal(read.entries.find((e) => e.header.name === "z/hard")?.header.type, "link");
    // 3 directories, each with sub/ and 200 files; the hard link, the whiteout, 2 markers.
    assert.equal(names.length, 3 * 202 + 1 + 1 + 2);
  });
});
