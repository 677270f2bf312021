// For interceptors that must see the end of a server stream, not only its start: wraps a
// streaming response's messages in a generator of the caller's.
import type { StreamResponse, UnaryResponse } from "@connectrpc/connect";

export function wrapMessages<R extends UnaryResponse | StreamResponse>(res: R, wrap: (source: AsyncIterable<unknown>) => AsyncGenerator<unknown>): R {
  if (!res.stream) return res;
  return { ...res, message: wrap(res.message) };
}
