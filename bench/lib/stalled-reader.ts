// A StreamLogs reader that never reads: a Connect streaming call on a raw socket, paused.
import { connect, type Socket } from "node:net";

export function stalledLogReader(port: number, buildId: string): Socket {
  const body = Buffer.from(JSON.stringify({ buildId, follow: true }));
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  const s = connect(port, "127.0.0.1", () => {
    s.write(`POST /kiln.v1.BuilderService/StreamLogs HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: ${frame.length}\r\n\r\n`);
    s.write(frame);
    s.pause(); // and never resume
  });
  s.on("error", () => {});
  return s;
}
