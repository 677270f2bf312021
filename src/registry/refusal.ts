// A registry's refusal as podman or buildah report it ("unauthorized: authentication required",
// "denied: requested access to the resource is denied", HTTP 401/403) made into a clear error
// naming the registry: a permanent refusal, never retried.
import { KilnError } from "../errors/kiln-error.js";

// Only podman's and buildah's own error lines: a RUN step's "Permission denied" is not a registry's.
const ERROR_LINE = /^(?:Error:|time=.*level=(?:error|fatal))/;
const REFUSED = /unauthorized|authentication required|requested access to the resource is denied|invalid username\/password|(?:registry|manifest|blob|token|status)\D{0,40}\b40[13]\b/i;
// Registry names as they appear in podman's messages: "reading manifest 1 in 127.0.0.1:5000/base/busybox".
const REF = /\b((?:[a-z0-9-]+\.)*[a-z0-9-]+(?::\d+)?)\/[a-z0-9._\/-]+/i;

const HINT = "give registry_credentials for it or add it to kilnd's --registry-auth-file";

/** kiln's own registry client was refused (RegistryAuthError): the same clear, final error. */
export function authRefusal(e: Error, prefix = ""): KilnError {
  return new KilnError("failed_precondition", `${prefix}${e.message}; ${HINT}`);
}

/** What kiln or podman says when a registry refuses a push: the same words either way. */
export const pushRefused = (registry: string, status: number, detail?: string) =>
  new KilnError("failed_precondition", `registry ${registry} refused the push (${status === 403 ? "403: not allowed for these credentials" : "401: no credentials, or wrong ones"}); ${HINT}${detail ? `: ${detail}` : ""}`);

export function registryRefusal(stderrTail: readonly string[], action: "pull" | "push", registry?: string): KilnError | undefined {
  const line = [...stderrTail].reverse().find((l) => ERROR_LINE.test(l.trim()) && REFUSED.test(l));
  if (!line) return undefined;
  const host = registry ?? REF.exec(line.replace(/^.*?\b(?:in|from|to)\s+(?=\S+\/)/, ""))?.[1] ?? "the registry";
  const status = /403|denied|forbidden/i.test(line) && !/unauthorized|401/i.test(line) ? 403 : 401;
  if (action === "push") return pushRefused(host, status, line.trim().slice(0, 300));
  const why = status === 403 ? "403: not allowed for these credentials" : "401: no credentials, or wrong ones";
  return new KilnError("failed_precondition", `registry ${host} refused a pull (FROM or COPY --from image) (${why}); ${HINT}: ${line.trim().slice(0, 300)}`);
}
