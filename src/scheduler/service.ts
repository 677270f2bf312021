// kiln.v1.SchedulerService on top of the scheduler.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { LogLineSchema, LogStream } from "../gen/kiln/v1/builder_pb.js";
import { SchedulerService } from "../gen/kiln/v1/scheduler_pb.js";
import { invalidArgument } from "../errors/kiln-error.js";
import { ID_PATTERN } from "../util/ids.js";
import { checkProject } from "../validate/build-request.js";
import { isFinal } from "./deployment-events.js";
import type { ProjectAdmin } from "./project-admin.js";
import type { Scheduler } from "./scheduler.js";

function checkId(id: string): string {
  if (!id) throw invalidArgument("deployment_id", "is required");
  if (!ID_PATTERN.test(id)) throw invalidArgument("deployment_id", `${JSON.stringify(id.slice(0, 80))} is not a deployment id`);
  return id;
}

export function createSchedulerService(s: Scheduler, admin: ProjectAdmin): ServiceImpl<typeof SchedulerService> {
  return {
    async submitCommit(req) {
      return { deployment: (await s.submit(checkProject(req.project), req.commit, "rpc")).deployment };
    },
    async getDeployment(req) {
      return { deployment: await s.get(checkId(req.deploymentId)) };
    },
    async listDeployments(req) {
      return { deployments: await s.list(req.project ? checkProject(req.project) : undefined, req.limit) };
    },
    async createProject(req) {
      return { project: await admin.create(req.project) };
    },
    async updateProject(req) {
      return { project: await admin.update(req.project) };
    },
    async deleteProject(req) {
      await admin.delete(req.name);
      return {};
    },
    async getProject(req) {
      return { project: await admin.get(req.name) };
    },
    async listProjects() {
      return { projects: await admin.list() };
    },
    async *followDeployment(req, ctx) {
      const id = checkId(req.deploymentId);
      let missed = 0;
      // The position is taken here, before the first message: nothing falls between.
      const events = s.events.follow(id, ctx.signal, (n) => (missed += n));
      const first = await s.get(id);
      yield { event: { case: "deployment", value: first } };
      if (isFinal(first.state)) return;
      for await (const e of events) {
        if (missed > 0) {
          yield { event: { case: "line", value: create(LogLineSchema, { text: `(${missed} lines skipped: this follower fell behind; kilnd's StreamLogs of the build has them all)`, stream: LogStream.SYSTEM }) } };
          missed = 0;
        }
        if (e.case === "deployment") {
          yield { event: { case: "deployment", value: e.value } };
          if (isFinal(e.value.state)) return;
        } else yield { event: e };
      }
    },
  };
}
