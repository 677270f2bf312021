// A project as the API and the store hold it (kiln.v1.Project) and as the scheduler uses it
// (ProjectConfig). Project's proto3 JSON is a project of the config file, so one parser checks
// both: parseProject in config.ts.
import { isAbsolute } from "node:path";
import { create, toJson, type JsonValue } from "@bufbuild/protobuf";
import { usageError } from "../errors/kiln-error.js";
import { ProjectSchema, type Project } from "../gen/kiln/v1/scheduler_pb.js";
import { parseProject, type ProjectConfig } from "./config.js";

export type ProjectSource = "config" | "api";

export interface StoredProject {
  config: ProjectConfig;
  source: ProjectSource;
}

/** An API project: every file it names is an absolute path on the scheduler's hosts. */
export function projectFromApi(p: Project, machineData: (name: string) => string): ProjectConfig {
  const json = toJson(ProjectSchema, p) as Record<string, unknown>;
  delete json.source;
  const path = (f: string) => {
    if (!isAbsolute(f)) throw usageError(`project: ${JSON.stringify(f.slice(0, 200))}: a file is named by its absolute path on the scheduler's hosts`);
    return f;
  };
  return parseProject(json, "project", path, machineData);
}

export function projectToApi(c: ProjectConfig, source: ProjectSource): Project {
  const m = c.machine;
  return create(ProjectSchema, {
    name: c.name,
    git: c.git,
    github: c.github,
    branch: c.branch,
    containerfile: c.containerfile,
    context: c.context,
    image: c.image,
    buildArgs: c.buildArgs,
    secrets: Object.fromEntries(Object.entries(c.secretFiles).map(([id, file]) => [id, { file }])),
    registryCredentials: c.registryCredentials.map((r) => ({ registry: r.registry, username: r.username, passwordFile: r.passwordFile })),
    ...(c.gitCredentials ? { gitCredentials: { username: c.gitCredentials.username, passwordFile: c.gitCredentials.passwordFile } } : {}),
    ...(c.githubApp ? { githubApp: { ...c.githubApp } } : {}),
    kilndTokenFile: c.kilndTokenFile ?? "",
    machine:
      m.driver === "local"
        ? { driver: "local", data: m.data, idleTimeout: m.idleTimeout, insecureRegistries: m.insecureRegistries, port: m.port }
        : { driver: "fly", apiUrl: m.apiUrl, app: m.app, machineId: m.machineId, apiTokenFile: m.apiTokenFile, kilndUrl: m.kilndUrl, volumeId: m.volumeId ?? "" },
    source,
  });
}

/** The store's form: the API's JSON (paths already absolute). */
export const projectJson = (c: ProjectConfig): JsonValue => {
  const json = toJson(ProjectSchema, projectToApi(c, "api")) as Record<string, unknown>;
  delete json.source;
  return json as JsonValue;
};

export const projectFromJson = (json: JsonValue): ProjectConfig => parseProject(json, "stored project", (f) => f);
