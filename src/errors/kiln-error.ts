// kiln's one error type: a stable code and a message fit for the caller. The API edge
// (server/errors.ts) maps it to a ConnectError once, through KilnError.from, which makes anything
// else an internal error; the binaries map invalid_argument (bad usage or configuration) to exit
// code 2. A module's own errors (the registry client's, the fast path's refusal) stay inside it,
// or are converted there.

export type KilnErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "unauthenticated"
  | "unavailable"
  | "cancelled"
  | "internal";

export class KilnError extends Error {
  override readonly name = "KilnError";
  constructor(
    readonly code: KilnErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Any thrown value as a KilnError: itself, or internal (the cause kept for the log). */
  static from(e: unknown): KilnError {
    if (e instanceof KilnError) return e;
    return new KilnError("internal", "internal error", { cause: e });
  }
}

/** Bad usage or configuration (flags, config files): exit code 2 in the binaries. */
export const usageError = (message: string) => new KilnError("invalid_argument", message);

export const invalidArgument = (field: string, why: string) =>
  new KilnError("invalid_argument", `${field}: ${why}`);

