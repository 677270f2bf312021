// The scheduler's config is checked as strictly as kilnd's flags: unknown keys, wrong types and
// out-of-range numbers are named, as invalid_argument errors (kiln-scheduler exits 2 on them).
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { KilnError } from "../../src/errors/kiln-error.js";
import { loadSchedulerConfig } from "../../src/scheduler/config.js";
import { projectFromApi, projectFromJson, projectJson, projectToApi } from "../../src/scheduler/projects.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const dir = tempDir("sched-config");
const project = { name: "p", git: "https://github.com/acme/p.git", image: "registry.example:5000/acme/p", machine: { driver: "local", idleTimeout: 30 } };
const load = (cfg: unknown) => {
  const file = join(dir, "scheduler.json");
  writeFileSync(file, JSON.stringify(cfg));
  return loadSchedulerConfig(file);
};
const refused = (cfg: unknown, re: RegExp) => assert.throws(() => load(cfg), (e: unknown) => e instanceof KilnError && e.code === "invalid_argument" && re.test(e.message));

describe("scheduler config", () => {
  after(() => removeTree(dir));

  test("a good config loads, with its defaults", () => {
    const c = load({ data: "state", projects: [project] });
    assert.equal(c.listen, "127.0.0.1:5460");
    assert.equal(c.projects[0]!.github, "acme/p");
    assert.equal(c.projects[0]!.branch, "main");
  });

  test("unknown keys are named, at every level", () => {
    refused({ data: "state", projects: [project], listn: "x" }, /^config\.listn: not a setting/);
    refused({ data: "state", projects: [{ ...project, imgae: "x" }] }, /^projects\[0\]\.imgae: not a setting/);
    refused({ data: "state", projects: [{ ...project, machine: { driver: "local", idletimeout: 3 } }] }, /^projects\[0\]\.machine\.idletimeout: not a setting/);
    refused({ data: "state", projects: [{ ...project, machine: { driver: "fly", app: "a", machineId: "m", apiTokenFile: "t", kilndUrl: "http://k", data: "d" } }] }, /machine\.data: not a setting/);
    refused({ data: "state", projects: [{ ...project, gitCredentials: { passwordFile: "f", user: "u" } }] }, /gitCredentials\.user: not a setting/);
  });

  test("wrong types and ranges are named", () => {
    refused({ data: "state", projects: [{ ...project, machine: { driver: "local", idleTimeout: "30" } }] }, /idleTimeout: a whole number/);
    refused({ data: "state", projects: [{ ...project, machine: { driver: "local", port: 70000 } }] }, /port: a whole number from 0 to 65535/);
    refused({ data: "state", projects: [{ ...project, machine: { driver: "local", insecureRegistries: "127.0.0.1:5000" } }] }, /insecureRegistries: a list of HOST\[:PORT\]/);
    refused({ data: "state", projects: [{ ...project, buildArgs: { N: 1 } }] }, /buildArgs: an object of strings/);
    refused({ data: "state", projects: [{ ...project, branch: 7 }] }, /branch: a non-empty string/);
    refused({ data: "state", listen: "nowhere", projects: [project] }, /^listen: "nowhere" is not HOST:PORT/);
    refused({ data: "state", projects: {} }, /^projects: a list is required/);
    refused({ data: "state", database: "mysql://x/y", projects: [] }, /^database: mysql: is not postgres:/);
    refused({ data: "state", fly: { app: "a", apiTokenFile: "t", image: "i", region: "ams", volumeSize: 3 } }, /^config\.fly\.volumeSize: not a setting/);
    refused({ data: "state", leaseSeconds: 1 }, /leaseSeconds: a whole number from 2 to 300/);
    refused([1], /^config: an object is required/);
  });

  test("a project's API form is the config file's: every setting goes through it and back unchanged", () => {
    const full = {
      ...project,
      branch: "release",
      containerfile: "build/Containerfile",
      context: "app",
      buildArgs: { NODE_ENV: "production" },
      secrets: { npmrc: { file: "/etc/kiln/npmrc" } },
      registryCredentials: [{ registry: "registry.example:5000", username: "ci", passwordFile: "/etc/kiln/reg" }],
      githubApp: { appId: "12", installationId: "34", privateKeyFile: "/etc/kiln/app.pem" },
      kilndTokenFile: "/etc/kiln/kilnd-token",
      machine: { driver: "local", data: "/var/lib/kiln-p", idleTimeout: 0, insecureRegistries: ["registry.example:5000"], port: 5461 },
    };
    const fly = { ...project, name: "q", machine: { driver: "fly", app: "kiln-builders", machineId: "148ed123", apiTokenFile: "/etc/kiln/fly", kilndUrl: "http://148ed123.vm.kiln-builders.internal:5456", volumeId: "vol_1" } };
    const c = load({ data: "state", projects: [full, fly] });
    for (const p of c.projects) {
      assert.deepEqual(projectFromApi(projectToApi(p, "api"), () => "unused"), p);
      assert.deepEqual(projectFromJson(projectJson(p)), p);
    }
    assert.throws(() => projectFromApi(projectToApi({ ...c.projects[0]!, kilndTokenFile: "relative/token" }, "api"), () => "x"), /absolute path/);
  });
});
