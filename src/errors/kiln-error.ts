// kiln's one internal error type: a stable code and a message fit for the caller. The API edge
// (server/interceptors.ts) maps it to a ConnectError once; anything else becomes Internal there.

export type KilnErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "unauthenticated"
  | "resource_exhausted"
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
}

export const invalidArgument = (field: string, why: string) =>
  new KilnError("invalid_argument", `${field}: ${why}`);

export const isKilnError = (e: unknown): e is KilnError => e instanceof KilnError;
