// gRPC server reflection (grpc.reflection.v1 and v1alpha), written on protobuf-es descriptors:
// lets `buf curl`, grpcurl and friends discover kilnd's services without a schema at hand.
import { create, fromBinary, toBinary, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

interface Index {
  services: string[];
  files: Map<string, DescFile>;
  symbols: Map<string, DescFile>;
  /** message type name -> extension field numbers */
  extensions: Map<string, Map<number, DescFile>>;
}

function buildIndex(files: readonly DescFile[], services: readonly string[]): Index {
  const idx: Index = { services: [...services], files: new Map(), symbols: new Map(), extensions: new Map() };
  const addMessage = (m: DescMessage, f: DescFile) => {
    idx.symbols.set(m.typeName, f);
    for (const n of m.nestedMessages) addMessage(n, f);
    for (const e of m.nestedEnums) idx.symbols.set(e.typeName, f);
    for (const x of m.nestedExtensions) addExtension(x.extendee.typeName, x.number, x.typeName, f);
  };
  const addExtension = (extendee: string, num: number, name: string, f: DescFile) => {
    idx.symbols.set(name, f);
    const m = idx.extensions.get(extendee) ?? new Map<number, DescFile>();
    m.set(num, f);
    idx.extensions.set(extendee, m);
  };
  const addFile = (f: DescFile) => {
    if (idx.files.has(f.proto.name)) return;
    idx.files.set(f.proto.name, f);
    for (const d of f.dependencies) addFile(d);
    for (const m of f.messages) addMessage(m, f);
    for (const e of f.enums) idx.symbols.set(e.typeName, f);
    for (const x of f.extensions) addExtension(x.extendee.typeName, x.number, x.typeName, f);
    for (const s of f.services) {
      idx.symbols.set(s.typeName, f);
      for (const m of s.methods) idx.symbols.set(`${s.typeName}.${m.name}`, f);
    }
  };
  files.forEach(addFile);
  return idx;
}

/** The file and every file it imports, dependencies first, each serialized once. */
function withDependencies(f: DescFile): Uint8Array[] {
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const visit = (x: DescFile) => {
    if (seen.has(x.proto.name)) return;
    seen.add(x.proto.name);
    out.push(toBinary(FileDescriptorProtoSchema, x.proto));
    x.dependencies.forEach(visit);
  };
  visit(f);
  return out;
}

type Request = v1.ServerReflectionRequest;
type Answer = v1.ServerReflectionResponse["messageResponse"];

function answer(idx: Index, req: Request): Answer {
  const notFound = (what: string): Answer => ({ case: "errorResponse", value: create(v1.ErrorResponseSchema, { errorCode: 5, errorMessage: `${what} not found` }) });
  const files = (f: DescFile | undefined, what: string): Answer =>
    f ? { case: "fileDescriptorResponse", value: create(v1.FileDescriptorResponseSchema, { fileDescriptorProto: withDependencies(f) }) } : notFound(what);
  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return { case: "listServicesResponse", value: create(v1.ListServiceResponseSchema, { service: idx.services.map((name) => ({ name })) }) };
    case "fileByFilename":
      return files(idx.files.get(r.value), `file ${r.value}`);
    case "fileContainingSymbol":
      return files(idx.symbols.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
    case "fileContainingExtension":
      return files(idx.extensions.get(r.value.containingType)?.get(r.value.extensionNumber), `extension ${r.value.containingType}(${r.value.extensionNumber})`);
    case "allExtensionNumbersOfType": {
      if (!idx.symbols.has(r.value)) return notFound(`type ${r.value}`);
      const nums = [...(idx.extensions.get(r.value)?.keys() ?? [])];
      return { case: "allExtensionNumbersResponse", value: create(v1.ExtensionNumberResponseSchema, { baseTypeName: r.value, extensionNumber: nums }) };
    }
    default:
      return { case: "errorResponse", value: create(v1.ErrorResponseSchema, { errorCode: 3, errorMessage: "empty reflection request" }) };
  }
}

/** Registers both reflection versions on the router for the given files and services. */
export function registerReflection(router: ConnectRouter, files: readonly DescFile[], services: readonly string[]): void {
  const idx = buildIndex([...files, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection], [
    ...services,
    v1.ServerReflection.typeName,
    v1alpha.ServerReflection.typeName,
  ]);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: answer(idx, req) });
      }
    },
  });
  // v1alpha has the same wire shape: translate through the binary form rather than by hand.
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const asV1 = fromBinaryV1(toBinary(v1alpha.ServerReflectionRequestSchema, req));
        const res = create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: asV1, messageResponse: answer(idx, asV1) });
        yield fromBinaryV1alpha(toBinary(v1.ServerReflectionResponseSchema, res));
      }
    },
  });
}

const fromBinaryV1 = (b: Uint8Array) => fromBinary(v1.ServerReflectionRequestSchema, b);
const fromBinaryV1alpha = (b: Uint8Array) => fromBinary(v1alpha.ServerReflectionResponseSchema, b);
