// A stock @grpc/grpc-js client for kilnd, with protobuf-es doing the (de)serialisation: what a
// control plane written against plain gRPC would use.
import * as grpc from "@grpc/grpc-js";
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  BuildRequestSchema,
  BuildResponseSchema,
  CancelRequestSchema,
  CancelResponseSchema,
  StreamLogsRequestSchema,
  StreamLogsResponseSchema,
} from "../../src/gen/kiln/v1/builder_pb.js";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../../src/gen/grpc/health/v1/health_pb.js";

const codec = <D extends DescMessage>(schema: D) => ({
  serialize: (m: MessageShape<D>) => Buffer.from(toBinary(schema, m)),
  deserialize: (b: Buffer) => fromBinary(schema, b),
});

const method = <I extends DescMessage, O extends DescMessage>(path: string, i: I, o: O, responseStream = false) => {
  const ci = codec(i);
  const co = codec(o);
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: ci.serialize,
    requestDeserialize: ci.deserialize,
    responseSerialize: co.serialize,
    responseDeserialize: co.deserialize,
  };
};

export const BuilderDefinition = {
  build: method("/kiln.v1.BuilderService/Build", BuildRequestSchema, BuildResponseSchema),
  cancel: method("/kiln.v1.BuilderService/Cancel", CancelRequestSchema, CancelResponseSchema),
  streamLogs: method("/kiln.v1.BuilderService/StreamLogs", StreamLogsRequestSchema, StreamLogsResponseSchema, true),
} as const;

export const HealthDefinition = {
  check: method("/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema),
  watch: method("/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, true),
} as const;

export function grpcClient<T extends Record<string, unknown>>(def: T, port: number): grpc.Client & Record<keyof T, (...args: unknown[]) => unknown> {
  const Ctor = grpc.makeGenericClientConstructor(def as unknown as grpc.ServiceDefinition, "kiln");
  return new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as never;
}

/** Promise form of a unary grpc-js call. */
export function unary<Res>(client: grpc.Client, name: string, req: unknown, metadata = new grpc.Metadata()): Promise<Res> {
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v: Res) => void) => void>)[name]!(req, metadata, (e, v) =>
      e ? reject(e) : resolve(v),
    );
  });
}
