// Bearer-token auth for every RPC but health, and for /metrics unless kilnd is told otherwise. The token file is watched, so a rotated token
// takes effect without a restart; comparison is constant-time.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { Interceptor } from "@connectrpc/connect";
import { KilnError } from "../errors/kiln-error.js";
import type { FSWatcher } from "chokidar";
import type { Logger } from "pino";

const HEALTH_SERVICE = "grpc.health.v1.Health";

export interface TokenAuth {
  /** Refuses every call but health without the right token; first after the error interceptor. */
  interceptor: Interceptor;
  /** For plain HTTP paths (metrics). */
  allows(authorization: string | undefined): boolean;
  close(): Promise<void>;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

export function readToken(file: string): string {
  const token = readFileSync(file, "utf8").trim();
  if (token.length < 16) throw new Error(`--token-file ${file}: the token must be at least 16 characters`);
  return token;
}

/** A token file others can read is a token others have: said at start, as ssh does of a key. */
function warnIfShared(file: string, logger: Logger): void {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) logger.warn({ file, mode: mode.toString(8) }, `the token file ${file} can be read by others (mode ${mode.toString(8)}): chmod 600 it`);
}

export function createTokenAuth(file: string, logger: Logger): TokenAuth {
  let expected = digest(readToken(file));
  warnIfShared(file, logger);
  // chokidar is loaded off the start-up path: the token is read above, the watch follows.
  const watching: Promise<FSWatcher | undefined> = import("chokidar").then(
    ({ watch }) => {
      const watcher = watch(file, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 20 } });
      watcher.on("change", () => {
        try {
          expected = digest(readToken(file));
          logger.info({ file }, "token reloaded");
        } catch (err) {
          logger.error({ err, file }, "token file changed but cannot be used; keeping the previous token");
        }
      });
      return watcher;
    },
    (err) => {
      logger.error({ err, file }, "cannot watch the token file: a rotated token needs a restart");
      return undefined;
    },
  );

  const allows = (authorization: string | undefined) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    // Compare digests: equal length always, so timingSafeEqual never throws or leaks the length.
    return m !== null && timingSafeEqual(digest(m[1]!), expected);
  };

  return {
    allows,
    interceptor: (next) => async (req) => {
      if (req.service.typeName !== HEALTH_SERVICE && !allows(req.header.get("authorization") ?? undefined)) {
        throw new KilnError("unauthenticated", "missing or wrong bearer token");
      }
      return next(req);
    },
    close: async () => (await watching)?.close(),
  };
}
