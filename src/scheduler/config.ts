// kiln-scheduler's configuration: a JSON file naming each project, its repository and branch,
// how to build it, and the machine (driver) its kilnd runs on.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseGitUrl } from "../git/url.js";
import { checkProject } from "../validate/build-request.js";
import { parseImageRepo } from "../validate/image-ref.js";
import type { GitHubAppConfig } from "./github-app.js";
import { usageError } from "../errors/kiln-error.js";
import { parseHostPort } from "../util/host-port.js";

export interface LocalMachineConfig {
  driver: "local";
  /** kilnd's --data for this project. */
  data: string;
  idleTimeout: number;
  insecureRegistries: string[];
  /** Fixed port for kilnd (0: a free one, kept across wakes). */
  port: number;
}

export interface FlyMachineConfig {
  driver: "fly";
  apiUrl: string;
  app: string;
  machineId: string;
  apiTokenFile: string;
  /** kilnd on the machine's private address, e.g. http://<id>.vm.<app>.internal:5456. */
  kilndUrl: string;
  /** The volume kiln provisioned with the machine (a project created by API). */
  volumeId?: string;
}

export interface ProjectConfig {
  name: string;
  git: string;
  /** owner/name as GitHub's push events name it. */
  github: string;
  branch: string;
  containerfile: string;
  context: string;
  image: string;
  buildArgs: Record<string, string>;
  /** Build secrets: id -> the file that holds the value (read at every build). */
  secretFiles: Record<string, string>;
  registryCredentials: { registry: string; username: string; passwordFile: string }[];
  gitCredentials?: { username: string; passwordFile: string };
  /** Git credentials as a GitHub App's installation token, minted per build. */
  githubApp?: GitHubAppConfig;
  kilndTokenFile?: string;
  machine: LocalMachineConfig | FlyMachineConfig;
}

type Json = Record<string, unknown>;
const str = (o: Json, k: string, where: string, dflt?: string): string => {
  const v = o[k] ?? dflt;
  if (typeof v !== "string" || v === "") throw usageError(`${where}.${k}: a non-empty string is required`);
  return v;
};

/** As strict as kilnd's flags: a key the scheduler does not know is a mistake, said by name. */
function onlyKeys(o: unknown, allowed: readonly string[], where: string): Json {
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw usageError(`${where}: an object is required`);
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw usageError(`${where}.${k}: not a setting (known: ${allowed.join(", ")})`);
  return o as Json;
}

const optStr = (o: Json, k: string, where: string): string | undefined => {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw usageError(`${where}.${k}: a string is required`);
  return v;
};

function intIn(o: Json, k: string, where: string, dflt: number, min: number, max: number): number {
  const v = o[k] ?? dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw usageError(`${where}.${k}: a whole number from ${min} to ${max} is required`);
  return v;
}

function stringMap(o: Json, k: string, where: string): Record<string, string> {
  const v = o[k] ?? {};
  if (typeof v !== "object" || v === null || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string")) throw usageError(`${where}.${k}: an object of strings is required`);
  return v as Record<string, string>;
}

function hostList(o: Json, k: string, where: string): string[] {
  const v = o[k] ?? [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || !/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(x))) throw usageError(`${where}.${k}: a list of HOST[:PORT] is required`);
  return v as string[];
}

const PROJECT_KEYS = ["name", "git", "github", "branch", "containerfile", "context", "image", "buildArgs", "secrets", "registryCredentials", "gitCredentials", "githubApp", "kilndTokenFile", "machine"];
const LOCAL_KEYS = ["driver", "data", "idleTimeout", "insecureRegistries", "port"];
const FLY_KEYS = ["driver", "apiUrl", "app", "machineId", "apiTokenFile", "kilndUrl", "volumeId"];

function githubName(git: string): string {
  // https://github.com/acme/gw.git, git@github.com:acme/gw.git -> acme/gw
  const m = /[/:]([^/:]+\/[^/]+?)(?:\.git)?\/?$/.exec(git);
  return m?.[1] ?? "";
}

/** Where the projects' builder machines are provisioned when a project is created by API with the fly driver. */
export interface FlyFleetConfig {
  apiUrl: string;
  app: string;
  apiTokenFile: string;
  /** The builder image (containerfiles/kiln-builder.Containerfile, pushed where Fly can pull it). */
  image: string;
  region: string;
  volumeSizeGb: number;
  /** kilnd's address; {machine} and {app} are replaced: http://{machine}.vm.{app}.internal:5456. */
  kilndUrl: string;
  cpus: number;
  memoryMb: number;
}

export interface SchedulerConfig {
  listen: string;
  data: string;
  /** postgres://… : projects, deployments and queues in PostgreSQL, shared by replicas. */
  database?: string;
  webhookSecretFile?: string;
  /** A bearer token for the SchedulerService (optional on loopback). */
  tokenFile?: string;
  fly?: FlyFleetConfig;
  /** How long a replica's hold on a project's queue lasts without renewal (PostgreSQL store). */
  leaseSeconds: number;
  projects: ProjectConfig[];
}

const TOP_KEYS = ["listen", "data", "database", "webhookSecretFile", "tokenFile", "fly", "leaseSeconds", "projects"];
const FLY_FLEET_KEYS = ["apiUrl", "app", "apiTokenFile", "image", "region", "volumeSizeGb", "kilndUrl", "cpus", "memoryMb"];

export function loadSchedulerConfig(file: string, env: NodeJS.ProcessEnv = process.env): SchedulerConfig {
  const base = dirname(resolve(file));
  const path = (p: string) => resolve(base, p);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw usageError(`${file}: ${(e as Error).message}`);
  }
  const raw = onlyKeys(parsed, TOP_KEYS, "config");
  const projects = raw.projects ?? [];
  if (!Array.isArray(projects)) throw usageError("projects: a list is required");
  const seen = new Set<string>();
  const cfg: SchedulerConfig = {
    listen: checkListen(str(raw, "listen", "config", "127.0.0.1:5460")),
    data: path(str(raw, "data", "config")),
    leaseSeconds: intIn(raw, "leaseSeconds", "config", 6, 2, 300),
    projects: projects.map((p: unknown, i: number) => {
      const project = parseProject(p, `projects[${i}]`, path);
      if (seen.has(project.name)) throw usageError(`projects[${i}].name: ${project.name} is configured twice`);
      seen.add(project.name);
      return project;
    }),
  };
  const database = env.KILN_SCHEDULER_DATABASE || optStr(raw, "database", "config");
  if (database) cfg.database = checkDatabase(database);
  const webhookSecretFile = optStr(raw, "webhookSecretFile", "config");
  if (webhookSecretFile) cfg.webhookSecretFile = path(webhookSecretFile);
  const tokenFile = optStr(raw, "tokenFile", "config");
  if (tokenFile) cfg.tokenFile = path(tokenFile);
  if (raw.fly !== undefined) {
    const f = onlyKeys(raw.fly, FLY_FLEET_KEYS, "config.fly");
    cfg.fly = {
      apiUrl: str(f, "apiUrl", "config.fly", "https://api.machines.dev"),
      app: str(f, "app", "config.fly"),
      apiTokenFile: path(str(f, "apiTokenFile", "config.fly")),
      image: str(f, "image", "config.fly"),
      region: str(f, "region", "config.fly"),
      volumeSizeGb: intIn(f, "volumeSizeGb", "config.fly", 50, 1, 500),
      kilndUrl: str(f, "kilndUrl", "config.fly", "http://{machine}.vm.{app}.internal:5456"),
      cpus: intIn(f, "cpus", "config.fly", 2, 1, 16),
      memoryMb: intIn(f, "memoryMb", "config.fly", 4096, 256, 131072),
    };
  }
  return cfg;
}

/** A postgres:// URL; its password, if any, is never repeated in an error. */
export function checkDatabase(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw usageError("database: a postgres://USER@HOST:PORT/DB URL is required");
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") throw usageError(`database: ${u.protocol} is not postgres:`);
  return url;
}

/**
 * One project, from the config file or from the API (whose Project's JSON has the same keys):
 * path resolves the files it names; machineData is the local driver's default data directory.
 */
export function parseProject(raw: unknown, where: string, path: (p: string) => string, machineData?: (name: string) => string): ProjectConfig {
  const p = onlyKeys(raw, PROJECT_KEYS, where);
  const name = checkProject(str(p, "name", where), `${where}.name`);
  const git = str(p, "git", where);
  parseGitUrl(git, `${where}.git`);
  const image = str(p, "image", where);
  parseImageRepo(image, `${where}.image`);
  const m = onlyKeys(p.machine ?? {}, (p.machine as Json | undefined)?.driver === "fly" ? FLY_KEYS : LOCAL_KEYS, `${where}.machine`);
  if (m.driver !== undefined && m.driver !== "local" && m.driver !== "fly") throw usageError(`${where}.machine.driver: "local" or "fly"`);
  const machine: LocalMachineConfig | FlyMachineConfig =
    m.driver === "fly"
      ? {
          driver: "fly",
          apiUrl: str(m, "apiUrl", `${where}.machine`, "https://api.machines.dev"),
          app: str(m, "app", `${where}.machine`),
          machineId: str(m, "machineId", `${where}.machine`),
          apiTokenFile: path(str(m, "apiTokenFile", `${where}.machine`)),
          kilndUrl: str(m, "kilndUrl", `${where}.machine`),
          ...(optStr(m, "volumeId", `${where}.machine`) ? { volumeId: optStr(m, "volumeId", `${where}.machine`)! } : {}),
        }
      : {
          driver: "local",
          data: m.data === undefined && machineData ? machineData(name) : path(str(m, "data", `${where}.machine`, `kilnd-${name}`)),
          idleTimeout: intIn(m, "idleTimeout", `${where}.machine`, 300, 0, 7 * 24 * 3600),
          insecureRegistries: hostList(m, "insecureRegistries", `${where}.machine`),
          port: intIn(m, "port", `${where}.machine`, 0, 0, 65535),
        };
  const project: ProjectConfig = {
    name,
    git,
    github: optStr(p, "github", where) || githubName(git),
    branch: str(p, "branch", where, "main"),
    containerfile: optStr(p, "containerfile", where) ?? "",
    context: optStr(p, "context", where) ?? ".",
    image,
    buildArgs: stringMap(p, "buildArgs", where),
    ...credentialsConfig(p, where, path),
    machine,
  };
  const kilndTokenFile = optStr(p, "kilndTokenFile", where);
  if (kilndTokenFile) project.kilndTokenFile = path(kilndTokenFile);
  return project;
}

/** A project's secrets and credentials: only file names, never values, are in the config. */
function credentialsConfig(p: Json, where: string, path: (p: string) => string): Pick<ProjectConfig, "secretFiles" | "registryCredentials" | "gitCredentials" | "githubApp"> {
  const secretFiles: Record<string, string> = {};
  const secrets = (p.secrets ?? {}) as Json;
  if (typeof secrets !== "object" || Array.isArray(secrets)) throw usageError(`${where}.secrets: an object of id -> {"file": PATH} is required`);
  for (const [id, v] of Object.entries(secrets)) {
    const file = typeof v === "string" ? v : typeof v === "object" && v !== null ? (v as Json).file : undefined;
    if (typeof file !== "string" || !file) throw usageError(`${where}.secrets.${id}: {"file": PATH} is required (values are never written in the config)`);
    secretFiles[id] = path(file);
  }
  const creds = (p.registryCredentials ?? []) as unknown[];
  if (!Array.isArray(creds)) throw usageError(`${where}.registryCredentials: a list is required`);
  const registryCredentials = creds.map((raw, i) => onlyKeys(raw, ["registry", "username", "passwordFile"], `${where}.registryCredentials[${i}]`)).map((c, i) => ({
    registry: str(c, "registry", `${where}.registryCredentials[${i}]`),
    username: str(c, "username", `${where}.registryCredentials[${i}]`),
    passwordFile: path(str(c, "passwordFile", `${where}.registryCredentials[${i}]`)),
  }));
  const out: Pick<ProjectConfig, "secretFiles" | "registryCredentials" | "gitCredentials" | "githubApp"> = { secretFiles, registryCredentials };
  if (p.gitCredentials !== undefined) {
    const g = onlyKeys(p.gitCredentials, ["username", "passwordFile"], `${where}.gitCredentials`);
    out.gitCredentials = { username: str(g, "username", `${where}.gitCredentials`, "x-access-token"), passwordFile: path(str(g, "passwordFile", `${where}.gitCredentials`)) };
  }
  if (p.githubApp !== undefined) {
    const g = onlyKeys(p.githubApp, ["appId", "installationId", "privateKeyFile", "apiUrl"], `${where}.githubApp`);
    const id = (k: string) => {
      const v = g[k];
      if ((typeof v !== "string" && typeof v !== "number") || String(v) === "") throw usageError(`${where}.githubApp.${k}: an id is required`);
      return String(v);
    };
    out.githubApp = {
      appId: id("appId"),
      installationId: id("installationId"),
      privateKeyFile: path(str(g, "privateKeyFile", `${where}.githubApp`)),
      apiUrl: str(g, "apiUrl", `${where}.githubApp`, "https://api.github.com"),
    };
    if (out.gitCredentials) throw usageError(`${where}: githubApp and gitCredentials are two ways to give git credentials; choose one`);
  }
  return out;
}

/** Checked at load, so that a bad address is a configuration error, not a failure at start. */
function checkListen(raw: string): string {
  parseHostPort(raw, "listen");
  return raw;
}
