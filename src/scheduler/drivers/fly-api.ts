// The Fly Machines REST API as kiln calls it: the bearer token read from its file at every call
// (so a rotated token is used at once), JSON both ways, and an answer or a status and Fly's
// error text, never a throw.
import { readFileSync } from "node:fs";

export interface FlyError {
  status: number;
  message: string;
}

export type FlyAnswer = { ok: true; body: Record<string, unknown> } | ({ ok: false } & FlyError);

export function flyApi(apiUrl: string, tokenFile: string) {
  const root = apiUrl.replace(/\/$/, "");
  return async function call(method: string, path: string, opts: { body?: unknown; timeoutMs?: number } = {}): Promise<FlyAnswer> {
    const token = readFileSync(tokenFile, "utf8").trim();
    let r: Response;
    try {
      r = await fetch(`${root}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
        signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
      });
    } catch (e) {
      return { ok: false, status: 0, message: `Machines API unreachable: ${(e as Error).message}` };
    }
    const text = await r.text();
    let body: Record<string, unknown> = {};
    try {
      body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      body = { error: text };
    }
    if (r.ok) return { ok: true, body };
    return { ok: false, status: r.status, message: String(body.error ?? r.statusText) };
  };
}

export type FlyCall = ReturnType<typeof flyApi>;

/** Answers Fly will not change by being asked again. */
export const isPermanentFlyError = (e: FlyError) => e.status === 400 || e.status === 401 || e.status === 403 || e.status === 404 || e.status === 422;
