// What a connection may cost kilnd before it makes a request: sockets that send nothing, half an
// HTTP/2 preface or no stream are closed after their timeouts, and a flood of idle sockets (more
// than the caps) makes room by closing the oldest idle ones, so /healthz and RPCs still answer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startServer, type KilnServer } from "../../src/server/http-server.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const open = (port: number, send?: string) =>
  new Promise<net.Socket>((res, rej) => {
    const s = net.connect(port, "127.0.0.1", () => {
      if (send) s.write(send);
      res(s);
    });
    s.on("error", () => {});
    s.once("error", rej);
  });
const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once("close", () => r())));

describe("connection limits (the server alone, small limits)", () => {
  let server: KilnServer;
  before(async () => {
    server = await startServer({
      host: "127.0.0.1",
      port: 0,
      handler: (_req, res) => void res.end("ok"),
      limits: { firstBytesMs: 300, headersMs: 300, h2IdleMs: 300, maxConnections: 50, maxPerAddress: 40 },
    });
  });
  after(() => server.close(100));

  test("a socket that sends nothing, and one that sends half a preface, are closed", async () => {
    const silent = await open(server.address.port);
    const half = await open(server.address.port, PREFACE.slice(0, 10));
    await Promise.all([closed(silent), closed(half)]);
  });

  test("an HTTP/2 connection that opens no stream is closed; one that does is answered", async () => {
    const idle = http2.connect(`http://127.0.0.1:${server.address.port}`);
    idle.on("error", () => {});
    await new Promise<void>((r) => idle.once("close", () => r()));
    const used = http2.connect(`http://127.0.0.1:${server.address.port}`);
    const body = await new Promise<string>((res, rej) => {
      const req = used.request({ ":path": "/" });
      let text = "";
      req.on("data", (d) => (text += d));
      req.on("end", () => res(text));
      req.on("error", rej);
    });
    assert.equal(body, "ok");
    // Once its stream is done, the connection idles out too.
    await new Promise<void>((r) => used.once("close", () => r()));
  });

  test("four times the cap in idle sockets: a request is still answered, and the oldest idle ones made room", { timeout: 20_000 }, async () => {
    // Timeouts far off: only the cap can close these.
    const capped = await startServer({ host: "127.0.0.1", port: 0, handler: (_req, res) => void res.end("ok"), limits: { firstBytesMs: 200_000, headersMs: 200_000, maxConnections: 50, maxPerAddress: 40 } });
    try {
      const idle: net.Socket[] = [];
      for (let i = 0; i < 200; i++) idle.push(await open(capped.address.port, i % 2 ? PREFACE.slice(0, 5) : undefined));
      const res = await fetch(`http://127.0.0.1:${capped.address.port}/`);
      assert.equal(await res.text(), "ok");
      // 40 per address at most: the 160 oldest went (and one more for the request), the newest stay.
      await Promise.all(idle.slice(0, 160).map(closed));
      assert.ok(!idle.at(-1)!.destroyed, "the newest idle socket is still open");
      for (const s of idle) s.destroy();
    } finally {
      await capped.close(100);
    }
  });
});

describe("kilnd under a flood of idle connections", () => {
  let dir: string, k: TestKilnd;
  before(async () => {
    dir = tempDir("conns");
    k = await startKilnd({ data: join(dir, "data") });
  });
  after(async () => {
    await k?.stop();
    removeTree(dir);
  });

  test("a 5 MB random body as a gRPC call over h2c: the error in trailers, and the stream ends (the client is not left sending)", { timeout: 20_000 }, async () => {
    const session = http2.connect(k.addr);
    try {
      const req = session.request({ ":method": "POST", ":path": "/kiln.v1.BuilderService/GetBuild", "content-type": "application/grpc", te: "trailers" });
      const trailers = new Promise<http2.IncomingHttpHeaders>((r) => req.once("trailers", r));
      const ended = new Promise<void>((r) => req.once("close", () => r()));
      req.on("data", () => {});
      req.on("error", () => {});
      // An envelope that claims more than the 4 MiB limit, then garbage.
      req.end(Buffer.concat([Buffer.from([0, 0xff, 0xff, 0xff, 0xf0]), randomBytes(5 * 1024 * 1024)]));
      assert.equal((await trailers)["grpc-status"], "8", "RESOURCE_EXHAUSTED");
      await ended;
      assert.ok((await k.client.getInfo({})).version, "kilnd serves on");
    } finally {
      session.close();
    }
  });

  test("5,000 idle sockets on loopback (some with half a preface): /healthz and an RPC answer, kilnd's descriptors stay bounded", async (t) => {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 5000; i += 250) {
      sockets.push(...(await Promise.all(Array.from({ length: 250 }, (_, j) => open(k.port, (i + j) % 3 === 0 ? PREFACE.slice(0, 12) : undefined).catch(() => undefined)))).filter((s): s is net.Socket => !!s));
    }
    const health = await fetch(`${k.addr}/healthz`);
    assert.equal(health.status, 200);
    assert.ok((await k.client.getInfo({})).version);
    const fds = readdirSync(`/proc/${k.proc.pid}/fd`).length;
    t.diagnostic(`${sockets.length} sockets opened; kilnd holds ${fds} descriptors`);
    assert.ok(fds < 4096 + 200, `kilnd holds ${fds} descriptors`);
    for (const s of sockets) s.destroy();
  });
});
