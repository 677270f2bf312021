// A registry seen through a proxy that can hold blob uploads: the way to have a push in
// flight for as long as a test needs (a registry that accepts the upload and does not answer).
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import { freePort } from "./wait.js";

export interface StallingProxy {
  host: string;
  /** From now on, blob uploads (PATCH/PUT under /blobs/uploads/) are held, never forwarded. */
  stall(on: boolean): void;
  /** Resolves when an upload is being held. */
  held(): Promise<void>;
  /** The next n blob uploads are answered with this status (a registry failing for a while). */
  failUploads(n: number, status: number): void;
  /** Uploads answered with a failure so far. */
  readonly failed: number;
  /** Manifest PUTs that reached the registry. */
  readonly manifestPuts: string[];
  stop(): Promise<void>;
}

export async function startStallingProxy(registry: string): Promise<StallingProxy> {
  let stalling = false;
  let onHeld: (() => void) | undefined;
  let heldOnce = new Promise<void>((r) => (onHeld = r));
  const manifestPuts: string[] = [];
  const parked = new Set<IncomingMessage>();
  const [rhost, rport] = registry.split(":");
  let failing = { n: 0, status: 503 };
  let failed = 0;
  const server: Server = createServer((req, res) => {
    const url = req.url ?? "/";
    if (failing.n > 0 && (req.method === "PATCH" || req.method === "PUT") && url.includes("/blobs/uploads/")) {
      failing.n--;
      failed++;
      // As a registry does: the body is read, then the answer.
      req.resume();
      req.once("end", () => res.writeHead(failing.status, { "content-type": "application/json" }).end('{"errors":[{"code":"UNAVAILABLE","message":"the registry is having a moment"}]}'));
      return;
    }
    if (stalling && (req.method === "PATCH" || req.method === "PUT") && url.includes("/blobs/uploads/")) {
      parked.add(req);
      req.on("close", () => parked.delete(req));
      onHeld?.();
      return; // never answered
    }
    if (req.method === "PUT" && url.includes("/manifests/")) manifestPuts.push(url);
    const up = request({ host: rhost, port: Number(rport), method: req.method, path: url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    host: `127.0.0.1:${port}`,
    stall(on) {
      stalling = on;
      if (on) heldOnce = new Promise<void>((r) => (onHeld = r));
    },
    held: () => heldOnce,
    failUploads(n, status) {
      failing = { n, status };
    },
    get failed() {
      return failed;
    },
    manifestPuts,
    stop: () => {
      for (const r of parked) r.destroy();
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
