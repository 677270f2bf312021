// A request body that is not the protobuf message it claims to be is the caller's mistake:
// InvalidArgument. connect-es answers Internal for it (its binary parser says so, as grpc-go
// does; connect-go says InvalidArgument), and gives no hook. So each handler's binary request
// body is read here first (at most the message limit), its message or envelopes decoded once,
// and a message that does not decode fails the read with InvalidArgument; connect then answers
// that code in the request's protocol. Compressed bodies and anything unexpected are passed on
// as they came: connect's own checks apply.
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";

const RAW = /^application\/(?:proto|x-protobuf)\s*(?:;|$)/i;
const ENVELOPED = /^application\/(?:connect\+proto|grpc|grpc\+proto|grpc-web|grpc-web\+proto)\s*(?:;|$)/i;
const COMPRESSED_FLAG = 0x01;
const END_FLAGS = 0x80 | 0x02; // gRPC-web trailers, Connect end-of-stream

/** Wraps the router's handlers whose request is one message (unary and server-streaming). */
export function checkBinaryRequests(router: ConnectRouter, maxBytes: number): void {
  router.handlers.forEach((h, i) => {
    // A client or bidi stream is read as it comes (reflection answers each request in turn): not buffered.
    if (h.method.methodKind !== "unary" && h.method.methodKind !== "server_streaming") return;
    router.handlers[i] = Object.assign((req: UniversalServerRequest) => h(checked(h, req, maxBytes)), h) as UniversalHandler;
  });
}

function checked(h: UniversalHandler, req: UniversalServerRequest, maxBytes: number): UniversalServerRequest {
  const type = req.header.get("content-type") ?? "";
  const raw = RAW.test(type);
  if (!raw && !ENVELOPED.test(type)) return req;
  const encoded = req.header.get("content-encoding") ?? req.header.get("connect-content-encoding") ?? req.header.get("grpc-encoding");
  if (encoded && encoded !== "identity") return req;
  const body = req.body;
  if (!(body && typeof body === "object" && Symbol.asyncIterator in body)) return req;
  const schema = h.method.input;
  async function* read(): AsyncIterable<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const c of body as AsyncIterable<Uint8Array>) {
      chunks.push(c);
      size += c.length;
      // Over the limit: connect says so itself.
      if (size > maxBytes + 5) {
        yield* chunks;
        yield* body as AsyncIterable<Uint8Array>;
        return;
      }
    }
    const all = Buffer.concat(chunks);
    if (raw) decode(schema, all);
    else forEachEnvelope(all, (flags, payload) => flags & (COMPRESSED_FLAG | END_FLAGS) || decode(schema, payload));
    yield all;
  }
  return { ...req, body: read() };
}

function decode(schema: Parameters<typeof fromBinary>[0], bytes: Uint8Array): void {
  try {
    fromBinary(schema, bytes);
  } catch (e) {
    throw new ConnectError(`the request is not a ${schema.typeName} message: ${(e as Error).message}`, Code.InvalidArgument);
  }
}

/** Whole envelopes (flags, 4-byte length, payload); a torn one is left to connect. */
function forEachEnvelope(all: Buffer, f: (flags: number, payload: Buffer) => unknown): void {
  for (let at = 0; at + 5 <= all.length; ) {
    const len = all.readUInt32BE(at + 1);
    if (at + 5 + len > all.length) return;
    f(all[at]!, all.subarray(at + 5, at + 5 + len));
    at += 5 + len;
  }
}
