// Projects by API: create (provisioning the builder: a Fly volume and machine, or a local data
// directory and port), update, delete (destroying what was provisioned), get, list. A project of
// this replica's config file is the file's: changing or deleting it here is refused.
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { KilnError } from "../errors/kiln-error.js";
import { MachineSchema, type Project } from "../gen/kiln/v1/scheduler_pb.js";
import { freePort } from "../util/net.js";
import { checkProject } from "../validate/build-request.js";
import type { SchedulerConfig } from "./config.js";
import { destroyFlyBuilder, provisionFlyBuilder } from "./drivers/fly-provision.js";
import { projectFromApi, projectToApi } from "./projects.js";
import { localMachineData, type Scheduler } from "./scheduler.js";

export class ProjectAdmin {
  constructor(
    private readonly cfg: SchedulerConfig,
    private readonly scheduler: Scheduler,
    private readonly logger: Logger,
  ) {}

  private get store() {
    return this.scheduler.store;
  }

  private fromApi(p: Project) {
    return projectFromApi(p, localMachineData(this.cfg));
  }

  private ownConfig(name: string): boolean {
    return this.cfg.projects.some((p) => p.name === name);
  }

  async create(input: Project | undefined): Promise<Project> {
    if (!input) throw new KilnError("invalid_argument", "project: is required");
    const p = { ...input, machine: input.machine ?? create(MachineSchema, { driver: "local" }) };
    const name = checkProject(p.name, "project.name");
    const driver = p.machine.driver || "local";
    const provision = driver === "fly" && !p.machine.machineId;
    // Every setting is checked before anything is made (the machine is checked once it exists).
    this.fromApi({ ...p, machine: create(MachineSchema, { driver: "local" }) });
    if (await this.store.project(name)) throw new KilnError("already_exists", `project: ${name} exists`);
    let machine = p.machine;
    if (provision) {
      if (!this.cfg.fly) throw new KilnError("failed_precondition", "project.machine: the fly driver needs the scheduler's fly settings (config.fly: app, apiTokenFile, image, region) to provision a builder");
      const m = await provisionFlyBuilder(this.cfg.fly, name, this.logger);
      machine = create(MachineSchema, { driver: "fly", apiUrl: m.apiUrl, app: m.app, machineId: m.machineId, apiTokenFile: m.apiTokenFile, kilndUrl: m.kilndUrl, volumeId: m.volumeId ?? "" });
    } else if (driver === "local" && !machine.port) {
      // Its own port, kept for good: the project's kilnd is found at the same address every wake.
      machine = { ...machine, port: await freePort() };
    }
    try {
      const config = this.fromApi({ ...p, machine });
      await this.store.putProject(config, "api", "create");
      this.logger.info({ project: name, driver }, "project created");
      return projectToApi(config, "api");
    } catch (e) {
      if (provision) await destroyFlyBuilder(machine.apiUrl, machine.apiTokenFile, machine.app, machine.machineId, machine.volumeId).catch((err) => this.logger.warn({ err, project: name }, "cannot remove the builder of a project that was not created"));
      throw e;
    }
  }

  async update(input: Project | undefined): Promise<Project> {
    if (!input) throw new KilnError("invalid_argument", "project: is required");
    const name = checkProject(input.name, "project.name");
    const had = await this.store.project(name);
    if (!had) throw new KilnError("not_found", `project: no project ${JSON.stringify(name)}`);
    if (this.ownConfig(name)) throw new KilnError("failed_precondition", `project: ${name} is defined in the scheduler's config file: change it there`);
    const config = { ...this.fromApi({ ...input, machine: create(MachineSchema, { driver: "local" }) }), machine: had.config.machine };
    await this.store.putProject(config, had.source, "replace");
    await this.scheduler.projectChanged(name);
    this.logger.info({ project: name }, "project updated");
    return projectToApi(config, had.source);
  }

  async delete(nameIn: string): Promise<void> {
    const name = checkProject(nameIn, "name");
    const had = await this.store.project(name);
    if (!had) throw new KilnError("not_found", `name: no project ${JSON.stringify(name)}`);
    if (this.ownConfig(name)) throw new KilnError("failed_precondition", `name: ${name} is defined in the scheduler's config file: remove it there`);
    await this.scheduler.dropProject(name);
    // The builder first: if Fly refuses, the project stays and deleting it again tries again.
    const m = had.config.machine;
    if (m.driver === "fly" && m.volumeId) await destroyFlyBuilder(m.apiUrl, m.apiTokenFile, m.app, m.machineId, m.volumeId);
    if (!(await this.store.deleteProject(name, "the project was deleted"))) throw new KilnError("not_found", `name: no project ${JSON.stringify(name)}`);
    await this.scheduler.projectChanged(name);
    this.logger.info({ project: name }, "project deleted");
  }

  async get(nameIn: string): Promise<Project> {
    const name = checkProject(nameIn, "name");
    const p = await this.store.project(name);
    if (!p) throw new KilnError("not_found", `name: no project ${JSON.stringify(name)}`);
    return projectToApi(p.config, p.source);
  }

  async list(): Promise<Project[]> {
    return (await this.store.projects()).map((p) => projectToApi(p.config, p.source));
  }
}
