#!/usr/bin/env node
// kiln: the command line for kilnd. Exit codes: 0 success (for a build: it succeeded), 1 the
// build failed or was cancelled, 2 bad usage, 3 kilnd refused or could not be reached.
import { ConnectError, Code } from "@connectrpc/connect";
import { kilndClient, tokenFrom } from "../client/kilnd.js";
import * as commands from "../cli/commands.js";
import type { Io } from "../cli/commands.js";
import { KilnError, usageError } from "../errors/kiln-error.js";

const USAGE = `usage: kiln [--addr URL] [--token-file FILE] COMMAND ...
  build --project P --git URL --commit SHA --image REPO [--containerfile F] [--context DIR]
        [--target STAGE] [--build-arg K=V ...] [--follow | --detach]
        [--secret id=ID,src=FILE|id=ID,env=VAR ...]
        [--registry-user USER --registry-password-file FILE [--registry HOST]] [--registry-auth-file FILE]
        [--git-user USER --git-password-file FILE]
  logs ID [-f] [--after SEQ]
  cancel ID
  get ID [--json]
  list [--project P] [--limit N]
  storage
  prune [--project P] [--dry-run]
--addr defaults to $KILN_ADDR or http://127.0.0.1:5456; the token comes from --token-file,
$KILN_TOKEN_FILE or $KILN_TOKEN.`;

const io: Io = { out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`) };

async function main(argv: string[]): Promise<number> {
  let addr = process.env.KILN_ADDR ?? "http://127.0.0.1:5456";
  let tokenFile: string | undefined;
  while (argv[0]?.startsWith("--")) {
    const flag = argv.shift()!;
    if (flag === "--help") break;
    const value = argv.shift();
    if (value === undefined) throw usageError(`${flag} needs a value`);
    if (flag === "--addr") addr = value;
    else if (flag === "--token-file") tokenFile = value;
    else throw usageError(`unknown option ${flag}`);
  }
  const [name, ...rest] = argv;
  const run = {
    build: commands.build,
    logs: commands.logs,
    cancel: commands.cancel,
    get: commands.get,
    list: commands.list,
    storage: commands.storage,
    prune: commands.prune,
  }[name ?? ""];
  if (!run) {
    io.err(USAGE);
    return name === undefined || name === "--help" ? 0 : 2;
  }
  return run(kilndClient(addr, tokenFrom(tokenFile, process.env)), rest, io);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    if (e instanceof KilnError && e.code === "invalid_argument") {
      io.err(`kiln: ${e.message}\n${USAGE}`);
      process.exit(2);
    }
    if (e instanceof ConnectError) {
      io.err(`kiln: ${Code[e.code] ?? e.code}: ${e.rawMessage}`);
      process.exit(3);
    }
    io.err(`kiln: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(3);
  },
);
