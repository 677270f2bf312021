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
  const server: Server = createServer((req, res) => {
    const url = req.url ?? "/";
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
    manifestPuts,
    stop: () => {
      for (const r of parked) r.destroy();
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
