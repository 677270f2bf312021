// One TCP port for every protocol: HTTP/2 cleartext (gRPC, Connect, gRPC-Web over h2c) and
// HTTP/1.1 (Connect, gRPC-Web, metrics), told apart by the HTTP/2 client preface.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { connectNodeAdapter } from "@connectrpc/connect-node";

type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;

export interface ServerOptions {
  host: string;
  port: number;
  handler: NodeHandlerFn;
  limits?: Partial<ConnectionLimits>;
}

/**
 * What a connection may cost before it has made a request. Connections that send nothing (or
 * half an HTTP/2 preface, or headers at a trickle) are closed after firstBytesMs / headersMs,
 * and when the connections reach a cap (all of them, or one address's), the oldest idle one is
 * closed to make room: idle is one that has not said what it speaks yet, an HTTP/1.1 one between
 * requests, an HTTP/2 one with no stream open. A flood of idle sockets thus never keeps
 * /healthz or an RPC from being answered; a new connection is refused only when every one is busy.
 */
export interface ConnectionLimits {
  firstBytesMs: number;
  headersMs: number;
  /** An HTTP/2 connection with no stream open for this long is closed (GOAWAY). */
  h2IdleMs: number;
  maxConnections: number;
  maxPerAddress: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = { firstBytesMs: 10_000, headersMs: 10_000, h2IdleMs: 120_000, maxConnections: 4096, maxPerAddress: 1024 };

export interface KilnServer {
  readonly address: { host: string; port: number };
  /** Stops accepting, asks HTTP/2 clients to go away (GOAWAY), and waits up to graceMs for calls to end. */
  close(graceMs: number): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
// gRPC's usual limit for one message; connect enforces it per message, this bounds the frames.
const MAX_HEADER_BYTES = 64 * 1024;

/**
 * connect-node waits for 'drain' or 'error' after a write the socket could not take at once. A
 * client that goes away mid-stream produces neither, only 'close', and the call would hang
 * forever (holding kilnd awake). On such a close, 'drain' lets connect write again, and that
 * write fails and ends the call.
 */
function endStalledWritesOnClose(res: { writableFinished: boolean; once(e: "close", f: () => void): unknown; emit(e: "drain"): boolean }): void {
  res.once("close", () => {
    if (!res.writableFinished) res.emit("drain");
  });
}

/**
 * Closes a connection whose request body was not read to the end without resetting it: a plain
 * close with unread data sends a TCP reset, and a client still sending its body then sees EPIPE
 * instead of the answer it was given. So: send FIN, read and drop what still comes (up to 5 s),
 * then close.
 */
function lingerOnClose(sock: net.Socket): void {
  sock.destroySoon = function (this: net.Socket) {
    this.end();
    this.on("data", () => {});
    this.resume();
    const t = setTimeout(() => this.destroy(), 5000);
    t.unref();
    this.once("end", () => this.destroy());
    this.once("close", () => clearTimeout(t));
  };
}

interface Conn {
  address: string;
  kind: "undecided" | "h1" | "h2";
  session?: http2.Http2Session;
  /** Streams open on an HTTP/2 connection. */
  streams: number;
  /** HTTP/1.1 requests in progress on it: at shutdown, a kept-alive connection with none is
   * closed at once instead of holding the exit for the whole grace period. */
  requests: number;
}

/**
 * connect stops reading a request it refuses (an oversize or garbled message) by destroying the
 * request stream. Over HTTP/2 that leaves the client blocked on a flow-control window only
 * reading opens: it never finishes sending, and its stream never ends, though the answer came
 * (Node does not get a reset to the client then). So the rest of the body is read and dropped
 * instead, for 5 s at most, and the stream then ends as streams do.
 */
function drainInsteadOfDestroy(req: http2.Http2ServerRequest): void {
  const destroy = req.destroy.bind(req);
  req.destroy = function (this: http2.Http2ServerRequest, err?: Error) {
    // What connect's reader does when it stops (an async iterator's return): AbortError.
    const stopsReading = !err || err.name === "AbortError";
    if (!stopsReading || this.readableEnded) return destroy(err);
    this.destroy = destroy;
    // Out of the iterator's paused mode ('readable' listeners keep resume() from working).
    this.removeAllListeners("readable");
    this.removeAllListeners("data");
    this.on("data", () => {});
    this.resume();
    const t = setTimeout(() => destroy(), 5000);
    t.unref();
    this.once("end", () => clearTimeout(t));
    return this;
  };
}

export async function startServer(opts: ServerOptions): Promise<KilnServer> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  // Every connection, in the order they came: the first idle one found is the oldest.
  const conns = new Map<net.Socket, Conn>();
  let closing = false;
  // A keep-alive window longer than clients' own (Node's agent: 5 s) so that a client never
  // reuses a connection the server has just closed (EPIPE on the next call).
  const h1 = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, keepAliveTimeout: 65_000, headersTimeout: limits.headersMs }, (req, res) => {
    const sock = req.socket;
    const conn = conns.get(sock);
    if (conn) conn.requests++;
    res.once("close", () => {
      if (conn) conn.requests--;
      if (closing && !conn?.requests) sock.destroySoon();
    });
    if (closing) res.shouldKeepAlive = false;
    // A response that starts before its request was read to the end (an oversize message is
    // refused that way) must close the connection: the unread rest of the body would be taken
    // for the next request on it.
    const writeHead = res.writeHead;
    res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
      if (!req.complete) {
        res.shouldKeepAlive = false;
        lingerOnClose(sock);
      }
      return writeHead.apply(this, args);
    } as typeof writeHead;
    endStalledWritesOnClose(res);
    opts.handler(req, res);
  });
  const h2 = http2.createServer({ maxSessionMemory: 32, settings: { maxHeaderListSize: MAX_HEADER_BYTES } }, (req, res) => {
    endStalledWritesOnClose(res);
    drainInsteadOfDestroy(req);
    opts.handler(req, res);
  });
  const perAddress = new Map<string, number>();
  const isIdle = (c: Conn) => c.kind === "undecided" || (c.kind === "h1" && c.requests === 0) || (c.kind === "h2" && c.streams === 0);
  let arriving: Conn | undefined;
  const evictIdle = (address?: string): boolean => {
    for (const [sock, c] of conns) {
      if ((address === undefined || c.address === address) && isIdle(c)) {
        c.session?.destroy();
        sock.destroy();
        return true;
      }
    }
    return false;
  };
  h2.on("session", (s) => {
    // The session is made while its socket is handed over (below), synchronously.
    const c = arriving;
    arriving = undefined;
    if (!c) return;
    c.session = s;
    // No stream for h2IdleMs (the first one included): the connection goes.
    let idleTimer: NodeJS.Timeout | undefined;
    const armIdle = () => {
      idleTimer = setTimeout(() => s.close(), limits.h2IdleMs);
      idleTimer.unref();
    };
    const firstStream = setTimeout(() => s.destroy(), limits.headersMs);
    firstStream.unref();
    armIdle();
    s.on("stream", (stream) => {
      clearTimeout(firstStream);
      clearTimeout(idleTimer);
      c.streams++;
      stream.once("close", () => {
        if (--c.streams === 0 && !s.closed) armIdle();
      });
    });
    s.once("close", () => {
      clearTimeout(firstStream);
      clearTimeout(idleTimer);
    });
  });
  // An HTTP/2 client that breaks the protocol must not take kilnd down.
  h2.on("sessionError", () => {});

  const tcp = net.createServer((socket) => {
    const address = socket.remoteAddress ?? "";
    // Room first: an idle connection of this address, else any, else this one is refused.
    if ((perAddress.get(address) ?? 0) >= limits.maxPerAddress && !evictIdle(address)) return void socket.destroy();
    if (conns.size >= limits.maxConnections && !evictIdle()) return void socket.destroy();
    const conn: Conn = { address, kind: "undecided", streams: 0, requests: 0 };
    conns.set(socket, conn);
    perAddress.set(address, (perAddress.get(address) ?? 0) + 1);
    const firstBytes = setTimeout(() => socket.destroy(), limits.firstBytesMs);
    firstBytes.unref();
    socket.on("close", () => {
      clearTimeout(firstBytes);
      conns.delete(socket);
      const n = (perAddress.get(address) ?? 1) - 1;
      if (n > 0) perAddress.set(address, n);
      else perAddress.delete(address);
    });
    socket.on("error", () => socket.destroy());
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && seen.length < PREFACE.length) return; // wait for the whole preface
      socket.off("data", onData);
      clearTimeout(firstBytes);
      socket.pause();
      socket.unshift(seen);
      conn.kind = isH2 ? "h2" : "h1";
      if (isH2) {
        // The HTTP/2 session reads what is buffered on the socket itself (on the next tick).
        arriving = conn;
        h2.emit("connection", socket);
        arriving = undefined;
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port, opts.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const addr = tcp.address() as net.AddressInfo;

  return {
    address: { host: addr.address, port: addr.port },
    async close(graceMs) {
      const closed = new Promise<void>((res) => tcp.close(() => res()));
      closing = true;
      for (const [sock, c] of conns) {
        if (c.session) c.session.close(); // GOAWAY: in-flight streams finish, no new ones
        else if (c.requests === 0) sock.destroySoon();
      }
      const idle = async () => {
        while (conns.size > 0) await new Promise((r) => setTimeout(r, 10));
      };
      const timer = new Promise<void>((r) => setTimeout(r, graceMs).unref());
      await Promise.race([idle(), timer]);
      for (const [sock, c] of conns) {
        c.session?.destroy();
        sock.destroy();
      }
      await closed;
    },
  };
}
