// How kiln's registry client authenticates, as the distribution spec has registries ask: a 401
// with `WWW-Authenticate: Basic realm=...` is answered with the credentials on every request; one
// with `Bearer realm=...,service=...,scope=...` by a token from the realm (GET with the
// credentials as Basic auth, `token` or `access_token` in the answer, `expires_in` seconds,
// 60 by default), cached per scope until shortly before it expires. A request that gets a 401
// with a token in hand gets a fresh token and is sent once more (a token that expired mid-push).
import type { Credential } from "./credentials.js";

export class RegistryAuthError extends Error {
  constructor(
    message: string,
    /** 401 or 403: a refusal that retrying will not change. */
    readonly status: number,
  ) {
    super(message);
  }
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="https://auth",service="registry",scope="repository:a:pull"`. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!)) !== null) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : (p[3] ?? "");
  return { scheme: m[1]!.toLowerCase(), params };
}

const EARLY_MS = 10_000;

export interface RegistryAuth {
  /** The Authorization header for the next request, if one is known. */
  header(): Promise<string | undefined>;
  /**
   * A 401 came back for a request sent with `sent` (its Authorization, if any): learns the
   * challenge and returns true when a retry can succeed (new or fresh credentials to send),
   * false when it cannot. Requests run in parallel: one that was refused with credentials
   * another has since replaced is simply sent again.
   */
  challenged(wwwAuthenticate: string | null, sent: string | undefined, signal?: AbortSignal): Promise<boolean>;
}

export function createRegistryAuth(o: {
  registry: string;
  credential: () => Promise<Credential | undefined>;
  /** The scopes every token is asked for, space-separated (repository:NAME:pull,push). */
  scope: string;
  insecure: boolean;
}): RegistryAuth {
  let mode: { kind: "basic"; value: string } | { kind: "bearer"; challenge: Challenge } | undefined;
  let token: { value: string; expires: number } | undefined;

  const basic = (c: Credential) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;

  async function fetchToken(ch: Challenge, signal?: AbortSignal): Promise<void> {
    const realm = ch.params.realm;
    if (!realm) throw new RegistryAuthError(`${o.registry} asks for a Bearer token but names no realm`, 401);
    const url = new URL(realm);
    if (url.protocol !== "https:" && !(url.protocol === "http:" && o.insecure)) {
      throw new RegistryAuthError(`${o.registry}: the token realm ${url.origin} is not https (credentials are sent over https only, unless the registry is an insecure one)`, 401);
    }
    if (ch.params.service) url.searchParams.set("service", ch.params.service);
    const scopes = new Set([...o.scope.split(" "), ...(ch.params.scope ? ch.params.scope.split(" ") : [])]);
    for (const s of scopes) url.searchParams.append("scope", s);
    const c = await o.credential();
    const headers: Record<string, string> = {};
    if (c) headers.authorization = basic(c);
    let res: Response;
    try {
      res = await fetch(url, { headers, signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000) });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new Error(`token from ${url.origin}: ${(e as Error).message}`);
    }
    if (res.status === 401 || res.status === 403) {
      await res.arrayBuffer().catch(() => undefined);
      throw new RegistryAuthError(`registry ${o.registry} refused access: its token service ${url.origin} refused ${c ? `the credentials of ${JSON.stringify(c.username)}` : "anonymous access (no credentials for this registry)"} (HTTP ${res.status})`, res.status);
    }
    if (!res.ok) throw new Error(`token from ${url.origin}: HTTP ${res.status}`);
    const body = (await res.json().catch(() => ({}))) as { token?: string; access_token?: string; expires_in?: number };
    const value = body.token ?? body.access_token;
    if (!value) throw new Error(`token from ${url.origin}: the answer has no token`);
    const seconds = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
    token = { value, expires: Date.now() + seconds * 1000 };
  }

  return {
    async header() {
      if (!mode) return undefined;
      if (mode.kind === "basic") return mode.value;
      if (!token || Date.now() > token.expires - EARLY_MS) await fetchToken(mode.challenge);
      return `Bearer ${token!.value}`;
    },
    async challenged(www, sent, signal) {
      const ch = www ? parseChallenge(www) : undefined;
      if (ch?.scheme === "bearer") {
        if (mode?.kind === "bearer" && token && sent !== `Bearer ${token.value}`) return true;
        // First contact, or the token in hand was refused (it expired mid-push): a fresh one.
        // The client sends a request a bounded number of times, so refusals end.
        mode = { kind: "bearer", challenge: ch };
        token = undefined;
        await fetchToken(ch, signal);
        return true;
      }
      if (ch?.scheme === "basic") {
        if (mode?.kind === "basic") return sent !== mode.value;
        const c = await o.credential();
        if (!c) return false;
        mode = { kind: "basic", value: basic(c) };
        return true;
      }
      return false;
    },
  };
}
