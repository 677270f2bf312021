// kiln.v1.SchedulerService on top of the scheduler.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { LogLineSchema, LogStream } from "../gen/kiln/v1/builder_pb.js";
import { SchedulerService } from "../gen/kiln/v1/scheduler_pb.js";
import { invalidArgument } from "../errors/kiln-error.js";
import { ID_PATTERN } from "../util/ids.js";
import { checkProject } from "../validate/build-request.js";
import { isFinal } from "./deployment-events.js";
import type { Scheduler } from "./scheduler.js";

function checkId(id: string): string {
  if (!id) throw invalidArgument("deployment_id", "is required");
  if (!ID_PATTERN.test(id)) throw invalidArgument("deployment_id", `${JSON.stringify(id.slice(0, 80))} is not a deployment id`);
  return id;
}

export function createSchedulerService(s: Scheduler): ServiceImpl<typeof SchedulerService> {
  return {
    async submitCommit(req) {
      return { deployment: await s.submit(checkProject(req.project), req.commit, "rpc") };
    },
    getDeployment(req) {
      return { deployment: s.get(checkId(req.deploymentId)) };
    },
    listDeployments(req) {
      return { deployments: s.list(req.project ? checkProject(req.project) : undefined, req.limit) };
    },
    async *followDeployment(req, ctx) {
      const id = checkId(req.deploymentId);
      let missed = 0;
      // The position is taken here, before the first message: nothing falls between.
      const events = s.events.follow(id, ctx.signal, (n) => (missed += n));
      const first = s.get(id);
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
