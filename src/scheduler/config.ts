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

export interface SchedulerConfig {
  listen: string;
  data: string;
  webhookSecretFile?: string;
  /** A bearer token for the SchedulerService (optional on loopback). */
  tokenFile?: string;
  projects: ProjectConfig[];
}


type Json = Record<string, unknown>;
const str = (o: Json, k: string, where: string, dflt?: string): string => {
  const v = o[k] ?? dflt;
  if (typeof v !== "string" || v === "") throw usageError(`${where}.${k}: a non-empty string is required`);
  return v;
};

function githubName(git: string): string {
  // https://github.com/acme/gw.git, git@github.com:acme/gw.git -> acme/gw
  const m = /[/:]([^/:]+\/[^/]+?)(?:\.git)?\/?$/.exec(git);
  return m?.[1] ?? "";
}

export function loadSchedulerConfig(file: string): SchedulerConfig {
  const base = dirname(resolve(file));
  const path = (p: string) => resolve(base, p);
  let raw: Json;
  try {
    raw = JSON.parse(readFileSync(file, "utf8")) as Json;
  } catch (e) {
    throw usageError(`${file}: ${(e as Error).message}`);
  }
  const projects = raw.projects;
  if (!Array.isArray(projects) || projects.length === 0) throw usageError("projects: at least one project is required");
  const seen = new Set<string>();
  const cfg: SchedulerConfig = {
    listen: checkListen(str(raw, "listen", "config", "127.0.0.1:5460")),
    data: path(str(raw, "data", "config")),
    projects: projects.map((p: Json, i: number) => {
      const where = `projects[${i}]`;
      const name = checkProject(str(p, "name", where), `${where}.name`);
      if (seen.has(name)) throw usageError(`${where}.name: ${name} is configured twice`);
      seen.add(name);
      const git = str(p, "git", where);
      parseGitUrl(git, `${where}.git`);
      const image = str(p, "image", where);
      parseImageRepo(image, `${where}.image`);
      const m = (p.machine ?? {}) as Json;
      const machine: LocalMachineConfig | FlyMachineConfig =
        m.driver === "fly"
          ? {
              driver: "fly",
              apiUrl: str(m, "apiUrl", `${where}.machine`, "https://api.machines.dev"),
              app: str(m, "app", `${where}.machine`),
              machineId: str(m, "machineId", `${where}.machine`),
              apiTokenFile: path(str(m, "apiTokenFile", `${where}.machine`)),
              kilndUrl: str(m, "kilndUrl", `${where}.machine`),
            }
          : {
              driver: "local",
              data: path(str(m, "data", `${where}.machine`, `kilnd-${name}`)),
              idleTimeout: Number(m.idleTimeout ?? 300),
              insecureRegistries: (m.insecureRegistries as string[] | undefined) ?? [],
              port: Number(m.port ?? 0),
            };
      if (m.driver !== undefined && m.driver !== "local" && m.driver !== "fly") throw usageError(`${where}.machine.driver: "local" or "fly"`);
      const project: ProjectConfig = {
        name,
        git,
        github: typeof p.github === "string" ? p.github : githubName(git),
        branch: str(p, "branch", where, "main"),
        containerfile: typeof p.containerfile === "string" ? p.containerfile : "",
        context: typeof p.context === "string" ? p.context : ".",
        image,
        buildArgs: (p.buildArgs as Record<string, string> | undefined) ?? {},
        ...credentialsConfig(p, where, path),
        machine,
      };
      if (typeof p.kilndTokenFile === "string") project.kilndTokenFile = path(p.kilndTokenFile);
      return project;
    }),
  };
  if (typeof raw.webhookSecretFile === "string") cfg.webhookSecretFile = path(raw.webhookSecretFile);
  if (typeof raw.tokenFile === "string") cfg.tokenFile = path(raw.tokenFile);
  return cfg;
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
  const creds = (p.registryCredentials ?? []) as Json[];
  if (!Array.isArray(creds)) throw usageError(`${where}.registryCredentials: a list is required`);
  const registryCredentials = creds.map((c, i) => ({
    registry: str(c, "registry", `${where}.registryCredentials[${i}]`),
    username: str(c, "username", `${where}.registryCredentials[${i}]`),
    passwordFile: path(str(c, "passwordFile", `${where}.registryCredentials[${i}]`)),
  }));
  const out: Pick<ProjectConfig, "secretFiles" | "registryCredentials" | "gitCredentials" | "githubApp"> = { secretFiles, registryCredentials };
  if (p.gitCredentials !== undefined) {
    const g = p.gitCredentials as Json;
    out.gitCredentials = { username: str(g, "username", `${where}.gitCredentials`, "x-access-token"), passwordFile: path(str(g, "passwordFile", `${where}.gitCredentials`)) };
  }
  if (p.githubApp !== undefined) {
    const g = p.githubApp as Json;
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
