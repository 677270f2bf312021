// A GitHub App's installation token, minted as GitHub documents it: a JWT signed RS256 with the
// app's private key (iat 60 s in the past for clock drift, exp at most 10 minutes on, iss the
// app's id), sent as a Bearer token to POST /app/installations/{id}/access_tokens, which answers
// 201 with {token, expires_at}. The token (an hour's life) is kept until 5 minutes before it
// expires, and is asked for the project's repository only.
import { createPrivateKey, createSign, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { KilnError } from "../errors/kiln-error.js";

export interface GitHubAppConfig {
  appId: string;
  installationId: string;
  privateKeyFile: string;
  /** https://api.github.com, or a GitHub Enterprise Server's https://HOST/api/v3. */
  apiUrl: string;
}


const b64url = (s: string | Buffer) => Buffer.from(s).toString("base64url");
const EARLY_MS = 5 * 60_000;

/** The app's JWT (RS256). */
export function appJwt(appId: string, key: KeyObject, nowMs = Date.now()): string {
  const now = Math.floor(nowMs / 1000);
  const body = `${b64url(JSON.stringify({ alg: "RS256", typ: "JWT" }))}.${b64url(JSON.stringify({ iat: now - 60, exp: now + 9 * 60, iss: appId }))}`;
  return `${body}.${b64url(createSign("RSA-SHA256").update(body).sign(key))}`;
}

export function createInstallationTokens(app: GitHubAppConfig, repository: string | undefined) {
  let cached: { token: string; expires: number } | undefined;
  let key: KeyObject | undefined;
  return {
    async token(signal?: AbortSignal): Promise<string> {
      if (cached && Date.now() < cached.expires - EARLY_MS) return cached.token;
      try {
        key ??= createPrivateKey(readFileSync(app.privateKeyFile));
      } catch (e) {
        throw new KilnError("failed_precondition", `githubApp.privateKeyFile: cannot read a private key from ${app.privateKeyFile}: ${(e as NodeJS.ErrnoException).code ?? "not a PEM key"}`);
      }
      const url = `${app.apiUrl.replace(/\/+$/, "")}/app/installations/${encodeURIComponent(app.installationId)}/access_tokens`;
      // Only the project's own repository (owner/name -> name), read access to contents is what a fetch needs.
      const name = repository?.split("/")[1];
      const body = JSON.stringify(name ? { repositories: [name], permissions: { contents: "read" } } : { permissions: { contents: "read" } });
      let res: Response;
      try {
        res = await fetch(url, {
          method: "POST",
          headers: {
            accept: "application/vnd.github+json",
            authorization: `Bearer ${appJwt(app.appId, key)}`,
            "x-github-api-version": "2022-11-28",
            "content-type": "application/json",
            "user-agent": "kiln-scheduler",
          },
          body,
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000),
        });
      } catch (e) {
        throw new KilnError("failed_precondition", `GitHub App installation token: ${url}: ${(e as Error).message}`);
      }
      const answer = (await res.json().catch(() => ({}))) as { token?: string; expires_at?: string; message?: string };
      if (res.status !== 201 || typeof answer.token !== "string") {
        throw new KilnError("failed_precondition", `GitHub App installation token: ${url} answered ${res.status}${answer.message ? `: ${answer.message.slice(0, 200)}` : ""}`);
      }
      const expires = Date.parse(answer.expires_at ?? "") || Date.now() + 60 * 60_000;
      cached = { token: answer.token, expires };
      return answer.token;
    },
  };
}

export type InstallationTokens = ReturnType<typeof createInstallationTokens>;
