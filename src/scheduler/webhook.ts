// GitHub push webhooks: the signature (X-Hub-Signature-256, HMAC-SHA256 of the raw body with the
// shared secret, compared in constant time) and the few fields of a push event kiln needs.
import { createHmac, timingSafeEqual } from "node:crypto";
import { COMMIT_PATTERN } from "../validate/build-request.js";

export interface PushEvent {
  repository: string;
  ref: string;
  commit: string;
  /** The commit the branch pointed at before this push ("" when unknown or a new branch). */
  before: string;
  /** X-GitHub-Delivery: GitHub sends the same id again when it retries a delivery. */
  delivery: string;
}

export type WebhookOutcome = { status: 401 | 400; error: string } | { status: 202; ignored: string } | { status: 202; push: PushEvent };

const ZEROS = /^0+$/;

export function verifySignature(secret: string, body: Buffer, header: string | undefined): boolean {
  const m = /^sha256=([0-9a-f]{64})$/i.exec(header ?? "");
  if (!m) return false;
  const expected = createHmac("sha256", secret).update(body).digest();
  return timingSafeEqual(Buffer.from(m[1]!, "hex"), expected);
}

/** Checks the signature first: nothing of an unsigned body is read. */
export function parseWebhook(secret: string, body: Buffer, headers: { signature?: string; event?: string; delivery?: string }): WebhookOutcome {
  if (!headers.signature) return { status: 401, error: "missing X-Hub-Signature-256" };
  if (!verifySignature(secret, body, headers.signature)) return { status: 401, error: "X-Hub-Signature-256 does not match" };
  let payload: { ref?: unknown; after?: unknown; before?: unknown; deleted?: unknown; repository?: { full_name?: unknown } };
  try {
    payload = JSON.parse(body.toString("utf8")) as typeof payload;
  } catch {
    return { status: 400, error: "the body is not JSON" };
  }
  if (typeof payload !== "object" || payload === null) return { status: 400, error: "the body is not a JSON object" };
  if (headers.event !== "push") return { status: 202, ignored: `event ${headers.event ?? "(none)"} is not a push` };
  if (payload.deleted === true) return { status: 202, ignored: "a deleted ref" };
  const repository = payload.repository?.full_name;
  if (typeof repository !== "string" || typeof payload.ref !== "string" || typeof payload.after !== "string") {
    return { status: 400, error: "a push event needs repository.full_name, ref and after" };
  }
  if (!COMMIT_PATTERN.test(payload.after)) return { status: 400, error: "after is not a commit SHA" };
  if (ZEROS.test(payload.after)) return { status: 202, ignored: "a deleted ref" };
  const before = typeof payload.before === "string" && COMMIT_PATTERN.test(payload.before) && !ZEROS.test(payload.before) ? payload.before : "";
  const delivery = /^[A-Za-z0-9-]{1,100}$/.test(headers.delivery ?? "") ? headers.delivery! : "";
  return { status: 202, push: { repository, ref: payload.ref, commit: payload.after, before, delivery } };
}
