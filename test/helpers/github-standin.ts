// A stand-in for the one GitHub API call kiln makes (GitHub cannot be reached from our
// machines), as GitHub documents it: POST /app/installations/{installation_id}/access_tokens
// with `Authorization: Bearer <JWT>`, the JWT signed RS256 with the app's private key, iss the
// app's id, iat/exp within 10 minutes; 201 {token, expires_at, permissions,
// repository_selection}; 401 for a JWT it cannot verify, 404 for an unknown installation.
import { createPublicKey, createVerify, generateKeyPairSync, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { freePort } from "./wait.js";

export interface GitHubStandIn {
  apiUrl: string;
  appId: string;
  installationId: string;
  /** Tokens minted so far: a git server accepts these. */
  readonly tokens: Set<string>;
  readonly requests: { status: number; repositories?: string[] }[];
  stop(): Promise<void>;
}

const json = (status: number, body: unknown) => ({ status, body: JSON.stringify(body) });

export async function startGitHubStandIn(privateKeyFile: string): Promise<GitHubStandIn> {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  writeFileSync(privateKeyFile, privateKey.export({ type: "pkcs1", format: "pem" }), { mode: 0o600 });
  const appId = "424242";
  const installationId = "31337";
  const tokens = new Set<string>();
  const requests: GitHubStandIn["requests"] = [];
  const pub = createPublicKey(publicKey.export({ type: "spki", format: "pem" }));

  const check = (jwt: string): string | undefined => {
    const [h, p, sig] = jwt.split(".");
    if (!h || !p || !sig) return "A JSON web token could not be decoded";
    const header = JSON.parse(Buffer.from(h, "base64url").toString()) as { alg?: string };
    if (header.alg !== "RS256") return "A JSON web token could not be decoded";
    if (!createVerify("RSA-SHA256").update(`${h}.${p}`).verify(pub, Buffer.from(sig, "base64url"))) return "A JSON web token could not be decoded";
    const claims = JSON.parse(Buffer.from(p, "base64url").toString()) as { iat?: number; exp?: number; iss?: string | number };
    const now = Math.floor(Date.now() / 1000);
    if (String(claims.iss) !== appId) return "Integration not found";
    if (typeof claims.iat !== "number" || typeof claims.exp !== "number" || claims.iat > now + 60) return "'Issued at' claim ('iat') must be an Integer representing a time in the past.";
    if (claims.exp <= now || claims.exp - claims.iat > 600 + 60) return "'Expiration time' claim ('exp') is too far in the future";
    return undefined;
  };

  const server: Server = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      const m = /^\/app\/installations\/([^/]+)\/access_tokens$/.exec(new URL(req.url ?? "/", "http://x").pathname);
      const auth = req.headers.authorization ?? "";
      let out;
      if (req.method !== "POST" || !m) out = json(404, { message: "Not Found" });
      else if (!auth.startsWith("Bearer ")) out = json(401, { message: "A JSON web token could not be decoded" });
      else {
        const why = check(auth.slice(7));
        if (why) out = json(401, { message: why });
        else if (m[1] !== installationId) out = json(404, { message: "Not Found" });
        else {
          const body = raw ? (JSON.parse(raw) as { repositories?: string[]; permissions?: Record<string, string> }) : {};
          const token = `ghs_${randomBytes(18).toString("base64url")}`;
          tokens.add(token);
          out = json(201, {
            token,
            expires_at: new Date(Date.now() + 3600_000).toISOString().replace(/\.\d+Z$/, "Z"),
            permissions: body.permissions ?? { contents: "read", metadata: "read" },
            repository_selection: body.repositories ? "selected" : "all",
          });
          requests.push({ status: 201, ...(body.repositories ? { repositories: body.repositories } : {}) });
        }
      }
      if (out.status !== 201) requests.push({ status: out.status });
      res.writeHead(out.status, { "content-type": "application/json; charset=utf-8" }).end(out.body);
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return { apiUrl: `http://127.0.0.1:${port}`, appId, installationId, tokens, requests, stop: () => new Promise((r) => server.close(() => r())) };
}
