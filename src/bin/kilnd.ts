#!/usr/bin/env node
// kilnd: the builder daemon. Exit codes: 0 after a clean stop (idle or SIGTERM), 1 when it cannot
// start or fails, 2 for bad usage, 3 when another kilnd holds the data directory; a machine's
// restart policy retries everything but 0.
import { KILND_USAGE, parseDaemonOptions } from "../config/options.js";
import { startDaemon } from "../daemon/daemon.js";
import { KilnError } from "../errors/kiln-error.js";
import { createLogger } from "../util/logger.js";

const EXIT_DATA_IN_USE = 3;

// kilnd ships as one minified file (scripts/bundle-kilnd.mjs): stack traces go through its source map.
process.setSourceMapsEnabled(true);

async function main(): Promise<number> {
  let opts;
  try {
    opts = parseDaemonOptions(process.argv.slice(2), process.env);
  } catch (e) {
    if (e instanceof KilnError && e.code === "invalid_argument") {
      process.stderr.write(`kilnd: ${e.message}\n${KILND_USAGE}\n`);
      return 2;
    }
    throw e;
  }
  if (opts === "help") {
    process.stdout.write(`${KILND_USAGE}\n`);
    return 0;
  }
  const logger = createLogger(opts.logLevel);
  let daemon;
  try {
    daemon = await startDaemon(opts, logger);
  } catch (err) {
    if (err instanceof KilnError && err.code === "already_exists") {
      logger.fatal(err.message);
      return EXIT_DATA_IN_USE;
    }
    logger.fatal({ err }, "kilnd cannot start");
    return 1;
  }
  // `on`, not `once`: execa's child cleanup (signal-exit) re-raises a signal when it finds itself
  // the only listener left, which would end kilnd with 143 in the middle of its graceful stop.
  // stop() is idempotent, so a second signal changes nothing.
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.on(sig, () => void daemon.stop("signal", sig));
  }
  process.on("unhandledRejection", (err) => logger.error({ err }, "unhandled rejection"));
  return daemon.stopped;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`kilnd: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
