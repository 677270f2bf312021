// The one place where errors meet the API: KilnErrors become ConnectErrors with their code, and
// anything unexpected is logged with its cause and returned as Internal, without internals.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { KilnError, type KilnErrorCode } from "../errors/kiln-error.js";
import { wrapMessages } from "./stream-response.js";

const CODES: Record<KilnErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  unauthenticated: Code.Unauthenticated,
  unavailable: Code.Unavailable,
  cancelled: Code.Canceled,
  internal: Code.Internal,
};

export function toConnectError(e: unknown, logger: Logger, procedure: string): ConnectError {
  // connect's own (a message too large, a protocol error) are answers already.
  if (e instanceof ConnectError) return e;
  const k = KilnError.from(e);
  if (k !== e) logger.error({ err: e, procedure }, "internal error in an RPC");
  return new ConnectError(k.message, CODES[k.code]);
}

export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const procedure = req.url;
    try {
      return wrapMessages(await next(req), async function* (source) {
        try {
          yield* source;
        } catch (e) {
          throw toConnectError(e, logger, procedure);
        }
      });
    } catch (e) {
      throw toConnectError(e, logger, procedure);
    }
  };
}
