// kiln's subcommands: build, logs, cancel, get, list.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { BuildState, type Build } from "../gen/kiln/v1/builder_pb.js";
import type { KilndClient } from "../client/kilnd.js";
import { asJson, summary, table } from "./format.js";
import { usageError } from "../errors/kiln-error.js";
import { parseGitCredentials, parseRegistryCredentials, parseSecrets } from "./credentials.js";

export interface Io {
  out(line: string): void;
  err(line: string): void;
}


/** Exit code of a finished build: 0 only when it succeeded. */
const exitOf = (b: Build) => (b.state === BuildState.SUCCEEDED ? 0 : 1);

type Options = NonNullable<ParseArgsConfig["options"]>;
type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

function parse(args: string[], options: Options, positionals = 0): { values: Values; positionals: string[] } {
  let r;
  try {
    r = parseArgs({ args, options, allowPositionals: positionals > 0, strict: true });
  } catch (e) {
    throw usageError((e as Error).message);
  }
  if (r.positionals.length !== positionals) throw usageError(positionals ? "expects a build id" : "takes no positional arguments");
  return r;
}

/** Prints the log from after `after`, following it to the end; returns the final build. */
async function follow(client: KilndClient, buildId: string, io: Io, after = 0n, live = true): Promise<Build | undefined> {
  let last: Build | undefined;
  for await (const msg of client.streamLogs({ buildId, follow: live, afterSeq: after })) {
    if (msg.event.case === "line") io.out(msg.event.value.text);
    else if (msg.event.case === "build") last = msg.event.value;
  }
  return last;
}

async function waitFor(client: KilndClient, id: string): Promise<Build> {
  // The log stream ends with the final record: one call, no polling.
  const b = await follow(client, id, { out: () => {}, err: () => {} });
  return b ?? (await client.getBuild({ buildId: id })).build!;
}

export async function build(client: KilndClient, args: string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { values: v } = parse(args, {
    project: { type: "string" },
    git: { type: "string" },
    commit: { type: "string" },
    image: { type: "string" },
    containerfile: { type: "string", short: "f" },
    context: { type: "string" },
    target: { type: "string" },
    "build-arg": { type: "string", multiple: true },
    secret: { type: "string", multiple: true },
    registry: { type: "string" },
    "registry-user": { type: "string" },
    "registry-password-file": { type: "string" },
    "registry-auth-file": { type: "string" },
    "git-user": { type: "string" },
    "git-password-file": { type: "string" },
    follow: { type: "boolean" },
    detach: { type: "boolean", short: "d" },
  });
  const buildArgs: Record<string, string> = {};
  for (const kv of (v["build-arg"] as string[] | undefined) ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw usageError(`--build-arg ${JSON.stringify(kv)}: expected NAME=VALUE`);
    buildArgs[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const str = (k: string) => v[k] as string | undefined;
  const secrets = parseSecrets((v.secret as string[] | undefined) ?? [], env);
  const registryCredentials = parseRegistryCredentials({
    ...(str("registry") ? { registry: str("registry") } : {}),
    ...(str("registry-user") ? { user: str("registry-user") } : {}),
    ...(str("registry-password-file") ? { passwordFile: str("registry-password-file") } : {}),
    ...(str("registry-auth-file") ? { authFile: str("registry-auth-file") } : {}),
    image: str("image") ?? "",
  });
  const gitCreds = parseGitCredentials({ ...(str("git-user") ? { user: str("git-user") } : {}), ...(str("git-password-file") ? { passwordFile: str("git-password-file") } : {}) });
  const { build: accepted } = await client.build({
    project: (v.project as string) ?? "",
    source: { kind: { case: "git", value: { url: (v.git as string) ?? "", commit: (v.commit as string) ?? "", ...gitCreds } } },
    secrets,
    registryCredentials,
    image: (v.image as string) ?? "",
    containerfile: (v.containerfile as string) ?? "",
    context: (v.context as string) ?? "",
    target: (v.target as string) ?? "",
    buildArgs,
  });
  const id = accepted!.id;
  io.err(`build ${id} accepted: ${accepted!.image}`);
  if (v.detach) {
    io.out(id);
    return 0;
  }
  const final = v.follow ? ((await follow(client, id, io)) ?? (await client.getBuild({ buildId: id })).build!) : await waitFor(client, id);
  io.out(summary(final));
  return exitOf(final);
}

export async function logs(client: KilndClient, args: string[], io: Io): Promise<number> {
  const { values: v, positionals } = parse(args, { follow: { type: "boolean", short: "f" }, after: { type: "string" } }, 1);
  const after = BigInt((v.after as string | undefined) ?? "0");
  const final = await follow(client, positionals[0]!, io, after, Boolean(v.follow));
  if (final && final.state !== BuildState.QUEUED && final.state !== BuildState.RUNNING) {
    io.err(summary(final));
    return exitOf(final);
  }
  return 0;
}

export async function cancel(client: KilndClient, args: string[], io: Io): Promise<number> {
  const { positionals } = parse(args, {}, 1);
  const { build: b } = await client.cancel({ buildId: positionals[0]! });
  io.out(summary(b!));
  return 0;
}

export async function get(client: KilndClient, args: string[], io: Io): Promise<number> {
  const { values: v, positionals } = parse(args, { json: { type: "boolean" } }, 1);
  const { build: b } = await client.getBuild({ buildId: positionals[0]! });
  io.out(v.json ? asJson(b!) : summary(b!));
  return 0;
}

export async function list(client: KilndClient, args: string[], io: Io): Promise<number> {
  const { values: v } = parse(args, { project: { type: "string" }, limit: { type: "string" } });
  const { builds } = await client.listBuilds({ project: (v.project as string) ?? "", limit: Number((v.limit as string) ?? 0) });
  io.out(table(builds));
  return 0;
}

const mib = (n: bigint | number) => `${(Number(n) / 2 ** 20).toFixed(0)} MiB`;

export async function storage(client: KilndClient, args: string[], io: Io): Promise<number> {
  parse(args, {});
  const s = await client.getStorage({});
  const o = s.overlay;
  io.out(`volume   ${s.dataDir}: ${s.volumeUsedPercent.toFixed(1)}% used of ${mib(s.volumeTotalBytes)}, ${mib(s.volumeFreeBytes)} free (reset above ${s.resetThresholdPercent}%; ${s.resets} resets so far)`);
  io.out(`overlay  ${!o?.checked ? "not checked yet" : o.native ? "native" : `NOT native: ${o.reason}. Fix: ${o.fix}`}`);
  io.out(`images   ${s.images} in storage, ${s.kilnImages} built by kiln (keeping the newest ${s.keepBuilds} per project), ${s.containers} containers`);
  io.out(`records  ${s.records} builds' records and logs (keeping the newest ${s.keepRecords} finished per project)`);
  return 0;
}

export async function prune(client: KilndClient, args: string[], io: Io): Promise<number> {
  const { values: v } = parse(args, { project: { type: "string" }, "dry-run": { type: "boolean" } });
  const r = await client.prune({ project: (v.project as string) ?? "", dryRun: Boolean(v["dry-run"]) });
  for (const i of r.images) io.out(`${v["dry-run"] ? "would remove" : "removed"}  ${i.project}  ${i.buildId || "-"}  ${i.names[0] ?? i.id.slice(0, 12)}`);
  io.out(v["dry-run"] ? `${r.images.length} images would be removed` : `${r.images.length} images removed, ${mib(r.bytesFreed)} freed${r.reset ? "; the volume was still over the threshold and storage was reset" : ""}`);
  return 0;
}
