#!/usr/bin/env node
// kiln-scheduler: receives commit events, keeps one queue per project, wakes each project's
// builder machine for its builds and puts it back to sleep. usage: kiln-scheduler --config FILE
import { parseArgs } from "node:util";
import { KilnError } from "../errors/kiln-error.js";
import { loadSchedulerConfig } from "../scheduler/config.js";
import { startScheduler } from "../scheduler/server.js";
import { createLogger } from "../util/logger.js";

const USAGE = "usage: kiln-scheduler --config FILE [--database postgres://…] [--log-level LEVEL]   (or KILN_SCHEDULER_CONFIG, KILN_SCHEDULER_DATABASE)";

async function main(): Promise<number> {
  let values;
  try {
    values = parseArgs({ options: { config: { type: "string" }, database: { type: "string" }, "log-level": { type: "string" }, help: { type: "boolean" } } }).values;
  } catch (e) {
    process.stderr.write(`kiln-scheduler: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const file = values.config ?? process.env.KILN_SCHEDULER_CONFIG;
  if (!file) {
    process.stderr.write(`kiln-scheduler: --config is required\n${USAGE}\n`);
    return 2;
  }
  const logger = createLogger(values["log-level"] ?? "info");
  let cfg;
  try {
    // --database, else $KILN_SCHEDULER_DATABASE, else the config file's "database".
    cfg = loadSchedulerConfig(file, values.database ? { ...process.env, KILN_SCHEDULER_DATABASE: values.database } : process.env);
  } catch (e) {
    if (e instanceof KilnError && e.code === "invalid_argument") {
      process.stderr.write(`kiln-scheduler: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
  const running = await startScheduler(cfg, logger);
  // `on`, not `once`: see kilnd.ts (signal-exit would re-raise the signal mid-stop).
  await new Promise<void>((resolve) => {
    process.on("SIGTERM", () => resolve());
    process.on("SIGINT", () => resolve());
  });
  logger.info("kiln-scheduler stopping");
  await running.stop();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`kiln-scheduler: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
