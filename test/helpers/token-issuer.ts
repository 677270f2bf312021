// A token issuer for a registry with `auth: token`, as the distribution token spec has it: GET
// /token?service=S&scope=repository:NAME:ACTIONS with Basic credentials answers {token,
// access_token, expires_in}; the token is a JWT signed RS256 with a key made by openssl, its
// certificate in the header (x5c) and in the registry's rootcertbundle. Only the one user gets
// tokens, for what it asks; anonymous requests get a token with no access.
import { execFileSync } from "node:child_process";
import { createSign, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { freePort } from "./wait.js";

export interface TokenIssuer {
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Tokens issued so far. */
  readonly issued: number;
  /** A token for the user, for a test's own requests. */
  mint(scopes: string[]): string;
  /** The next n tokens are expired when issued (still said to last an hour): the registry refuses them. */
  expireNext(n: number): void;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");
// distribution accepts tokens up to this long after their exp.
const REGISTRY_LEEWAY_S = 60;

export async function startTokenIssuer(dir: string, user: { username: string; password: string }): Promise<TokenIssuer> {
  const keyFile = join(dir, "issuer.key");
  const certFile = join(dir, "issuer.crt");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", "/CN=kiln-test-issuer"], { stdio: "ignore" });
  const key = readFileSync(keyFile, "utf8");
  const der = execFileSync("openssl", ["x509", "-in", certFile, "-outform", "DER"]);
  const service = "kiln-test-registry";
  const issuer = "kiln-test-issuer";
  let expiredToIssue = 0;
  let issued = 0;

  const sign = (access: { type: string; name: string; actions: string[] }[]) => {
    const now = Math.floor(Date.now() / 1000);
    let exp = now + 3600;
    if (expiredToIssue > 0) {
      expiredToIssue--;
      exp = now - REGISTRY_LEEWAY_S - 30;
    }
    const header = { alg: "RS256", typ: "JWT", x5c: [der.toString("base64")] };
    const claims = { iss: issuer, sub: user.username, aud: service, exp, nbf: now - 120, iat: now, jti: randomUUID(), access };
    const body = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${body}.${b64url(createSign("RSA-SHA256").update(body).sign(key))}`;
  };
  const grant = (scopes: string[]) =>
    scopes.flatMap((s) => {
      const [type, name, actions] = s.split(":");
      return type && name && actions ? [{ type, name, actions: actions.split(",") }] : [];
    });

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const auth = req.headers.authorization ?? "";
    const given = auth.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString("utf8") : undefined;
    if (given !== undefined && given !== `${user.username}:${user.password}`) {
      res.writeHead(401, { "content-type": "application/json" }).end('{"details":"wrong credentials"}');
      return;
    }
    if (url.searchParams.get("service") !== service) {
      res.writeHead(400).end("unknown service");
      return;
    }
    const token = sign(given === undefined ? [] : grant(url.searchParams.getAll("scope")));
    issued++;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token, access_token: token, expires_in: 3600, issued_at: new Date().toISOString() }));
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    get issued() {
      return issued;
    },
    mint: (scopes) => sign(grant(scopes)),
    expireNext(n) {
      expiredToIssue = n;
    },
    stop: () => new Promise((r) => server.close(() => r())),
  };
}
