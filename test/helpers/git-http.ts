// A private git repository over HTTP: git http-backend (git's own smart HTTP server, as CGI)
// behind a small server that asks for Basic credentials, as GitHub does for a private repo.
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import { dirname, basename } from "node:path";
import { freePort } from "./wait.js";

export interface GitHttpServer {
  /** The repository's URL, without credentials. */
  url: string;
  /** Authorization headers the server saw (for asserting how git sent its credentials). */
  readonly authorizations: string[];
  stop(): Promise<void>;
}

/** user: the one account, or a check of any user name and password (tokens minted elsewhere). */
export async function serveGitHttp(repoDir: string, user: { username: string; password: string } | ((username: string, password: string) => boolean)): Promise<GitHttpServer> {
  const root = dirname(repoDir);
  const name = basename(repoDir);
  const authorizations: string[] = [];
  const allowed = (auth: string | undefined): string | undefined => {
    if (!auth?.startsWith("Basic ")) return undefined;
    const plain = Buffer.from(auth.slice(6), "base64").toString("utf8");
    const i = plain.indexOf(":");
    const [u, p] = [plain.slice(0, i), plain.slice(i + 1)];
    const ok = typeof user === "function" ? user(u, p) : u === user.username && p === user.password;
    return ok ? u : undefined;
  };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const auth = req.headers.authorization;
    if (auth) authorizations.push(auth);
    const remoteUser = allowed(auth);
    if (!remoteUser) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="kiln-test-git"' }).end("authentication required\n");
      return;
    }
    const cgi = spawn("git", ["http-backend"], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? "GET",
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        REMOTE_USER: remoteUser,
        REMOTE_ADDR: "127.0.0.1",
        ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
      },
      stdio: ["pipe", "pipe", "ignore"],
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headerDone = false;
    cgi.stdout.on("data", (chunk: Buffer) => {
      if (headerDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      headerDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString("latin1").split("\r\n")) {
        const i = line.indexOf(":");
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === "status") status = Number.parseInt(v, 10);
        else headers[k] = v;
      }
      res.writeHead(status, headers);
      res.write(head.subarray(end + 4));
    });
    cgi.stdout.on("end", () => res.end());
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${port}/${name}`,
    authorizations,
    stop: () => new Promise((r) => server.close(() => r())),
  };
}
