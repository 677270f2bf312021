// What a project's builds are given to be able to build: its build secrets, registry
// credentials and git credentials, read from the files its configuration names at every build
// (rotating a file needs no restart), or, for a GitHub App, an installation token minted for
// the build. Nothing here is logged or stored by the scheduler: it goes into the Build request.
import { readFile } from "node:fs/promises";
import type { ProjectConfig } from "./config.js";
import { createInstallationTokens, type InstallationTokens } from "./github-app.js";
import { KilnError } from "../errors/kiln-error.js";

export interface BuildCredentials {
  secrets: Record<string, string>;
  registryCredentials: { registry: string; username: string; password: string }[];
  git: { username: string; password: string };
}


const readSecret = async (what: string, file: string) => {
  try {
    return (await readFile(file, "utf8")).replace(/\r?\n$/, "");
  } catch (e) {
    throw new KilnError("failed_precondition", `${what}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
};

export function createProjectSecrets(p: ProjectConfig) {
  const tokens: InstallationTokens | undefined = p.githubApp ? createInstallationTokens(p.githubApp, p.github || undefined) : undefined;
  return {
    async forBuild(signal?: AbortSignal): Promise<BuildCredentials> {
      const secrets: Record<string, string> = {};
      for (const [id, file] of Object.entries(p.secretFiles)) secrets[id] = await readSecret(`secrets.${id}`, file);
      const registryCredentials = [];
      for (const [i, c] of p.registryCredentials.entries()) {
        registryCredentials.push({ registry: c.registry, username: c.username, password: await readSecret(`registryCredentials[${i}].passwordFile`, c.passwordFile) });
      }
      let git = { username: "", password: "" };
      if (tokens) git = { username: "x-access-token", password: await tokens.token(signal) };
      else if (p.gitCredentials) git = { username: p.gitCredentials.username, password: await readSecret("gitCredentials.passwordFile", p.gitCredentials.passwordFile) };
      return { secrets, registryCredentials, git };
    },
  };
}

export type ProjectSecrets = ReturnType<typeof createProjectSecrets>;
