// Bare Bun proxies without any gate logic, the floor for what the gate costs per request.
// They take the gate's --listen, --upstream and --secret-file flags and ignore the
// others, so that bench/ab.ts can run them next to a gate build:
//
//   bun bench/ab.ts --variant gate=dist/preauth-gate \
//     --variant bare="bun bench/bare-proxy.ts --style bare" \
//     --variant socket="bun bench/bare-proxy.ts --style socket"
//
// Styles:
//   bare     Bun.serve passes the request on with fetch() and returns its response as it is
//   copying  also copies and cleans the headers both ways, wires a client-abort and
//            timeout signal and buffers bodies up to 1 MiB, as the gate did with fetch()
//   socket   relays over Bun.listen and Bun.connect with a minimal HTTP/1.1 reader:
//            Content-Length framing only, a request body only as far as it arrived with
//            its head (so small requests only), one pooled upstream connection per
//            request, the secret compared with ===, only /api/v4/config/client without it
// NOTE: none of them is safe to expose: they parse HTTP loosely and the first two check
// no secret, so they listen on 127.0.0.1 only.
import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const HOP_BY_HOP = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];
const BUFFERED_LIMIT = 1024 * 1024;
const TIMEOUT_MS = 600_000;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    style: { type: "string", default: "bare" },
    listen: { type: "string" },
    upstream: { type: "string" },
    "secret-file": { type: "string" },
  },
  strict: false,
  allowPositionals: true,
});
const style = String(values.style);
const [hostname = "127.0.0.1", port = "0"] = String(values.listen ?? "127.0.0.1:0").split(":");
const upstream = String(values.upstream ?? "http://127.0.0.1:8065");
if (hostname !== "127.0.0.1") throw new Error(`--listen ${values.listen}: the bare proxy checks no secret and listens on 127.0.0.1 only`);
if (style !== "bare" && style !== "copying" && style !== "socket") {
  throw new Error(`--style ${style}: expected bare, copying or socket`);
}

function withoutHopByHop(source: Headers): Headers {
  const headers = new Headers(source);
  for (const name of HOP_BY_HOP) headers.delete(name);
  return headers;
}

async function forwardCopying(request: Request, url: string): Promise<Response> {
  const headers = withoutHopByHop(request.headers);
  headers.delete("x-mattermost-preauth-secret");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  request.signal.addEventListener("abort", () => controller.abort(), { once: true });
  const init = { method: request.method, headers, body: request.body, redirect: "manual", signal: controller.signal, decompress: false, duplex: "half" };
  const response = await fetch(url, init as RequestInit);
  clearTimeout(timer);
  const length = Number(response.headers.get("content-length") ?? Infinity);
  const body = length <= BUFFERED_LIMIT ? await response.arrayBuffer() : response.body;
  return new Response(body, { status: response.status, headers: withoutHopByHop(response.headers) });
}

if (style === "socket") {
  const secretFile = values["secret-file"];
  if (typeof secretFile !== "string") throw new Error("--style socket needs --secret-file");
  startSocketRelay(Number(port), new URL(upstream), readFileSync(secretFile, "utf8").trim());
} else {
  Bun.serve({
    hostname,
    port: Number(port),
    fetch(request) {
      const url = upstream + request.url.slice(request.url.indexOf("/", request.url.indexOf("://") + 3));
      if (style === "copying") return forwardCopying(request, url);
      const init = { method: request.method, headers: request.headers, body: request.body, decompress: false, duplex: "half" };
      return fetch(url, init as RequestInit);
    },
  });
}

interface RelayClient {
  /** Bytes received and not yet handled. */
  buffer: Buffer | null;
  /** True while a request is upstream; further requests wait in `buffer`. */
  busy: boolean;
}

interface RelayUpstream {
  client: Socket<RelayClient> | null;
  /** Response bytes still to relay; -1 until the response head has arrived. */
  remaining: number;
  head: Buffer | null;
}

/**
 * Relays requests with Content-Length framing over raw sockets: the least an HTTP/1.1
 * proxy on Bun can do per request, with none of the gate's parsing, checks or timeouts.
 */
function startSocketRelay(listenPort: number, origin: URL, secret: string): void {
  const idle: Socket<RelayUpstream>[] = [];
  const headEnd = Buffer.from("\r\n\r\n");
  const rejection = "HTTP/1.1 403 Forbidden\r\nx-reject-reason: pre-auth\r\ncache-control: no-store\r\ncontent-length: 0\r\n\r\n";

  function finishResponse(upstreamSocket: Socket<RelayUpstream>): void {
    const client = upstreamSocket.data.client!;
    upstreamSocket.data.client = null;
    upstreamSocket.data.remaining = -1;
    idle.push(upstreamSocket);
    client.data.busy = false;
    if (client.data.buffer !== null) handle(client);
  }

  const upstreamHandlers = {
    data(upstreamSocket: Socket<RelayUpstream>, chunk: Buffer) {
      const relay = upstreamSocket.data;
      if (relay.remaining < 0) {
        const received = relay.head === null ? chunk : Buffer.concat([relay.head, chunk]);
        const end = received.indexOf(headEnd);
        if (end < 0) {
          relay.head = received;
          return;
        }
        relay.head = null;
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(received.toString("latin1", 0, end));
        relay.remaining = Number(length?.[1] ?? 0) - (received.length - end - 4);
        relay.client!.write(received);
      } else {
        relay.remaining -= chunk.length;
        relay.client!.write(chunk);
      }
      if (relay.remaining <= 0) finishResponse(upstreamSocket);
    },
    close(upstreamSocket: Socket<RelayUpstream>) {
      const index = idle.indexOf(upstreamSocket);
      if (index >= 0) idle.splice(index, 1);
      upstreamSocket.data.client?.terminate();
    },
  };

  function send(client: Socket<RelayClient>, request: Buffer): void {
    const pooled = idle.pop();
    if (pooled !== undefined) {
      pooled.data.client = client;
      pooled.write(request);
      return;
    }
    const data: RelayUpstream = { client, remaining: -1, head: null };
    void Bun.connect<RelayUpstream>({ hostname: origin.hostname, port: Number(origin.port), data, socket: upstreamHandlers }).then(
      (opened) => opened.write(request),
      () => client.terminate(),
    );
  }

  function handle(client: Socket<RelayClient>): void {
    const buffer = client.data.buffer!;
    const end = buffer.indexOf(headEnd);
    if (end < 0) return;
    const lines = buffer.toString("latin1", 0, end).split("\r\n");
    const target = lines[0]!.split(" ")[1] ?? "/";
    let presented: string | null = null;
    let length = 0;
    const forwarded = [lines[0]!];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      if (name === "x-mattermost-preauth-secret") presented = line.slice(colon + 1).trim();
      else if (name !== "connection") forwarded.push(line);
      if (name === "content-length") length = Number(line.slice(colon + 1));
    }
    const requestEnd = end + 4 + length;
    client.data.buffer = buffer.length > requestEnd ? buffer.subarray(requestEnd) : null;
    if (target !== "/api/v4/config/client" && presented !== secret) {
      client.write(rejection);
      if (client.data.buffer !== null) handle(client);
      return;
    }
    client.data.busy = true;
    forwarded.push("X-Forwarded-For: 127.0.0.1", "", "");
    send(client, Buffer.concat([Buffer.from(forwarded.join("\r\n"), "latin1"), buffer.subarray(end + 4, requestEnd)]));
  }

  Bun.listen<RelayClient>({
    hostname: "127.0.0.1",
    port: listenPort,
    data: { buffer: null, busy: false },
    socket: {
      open(client) {
        client.data = { buffer: null, busy: false };
      },
      data(client, chunk) {
        const pending = client.data.buffer;
        client.data.buffer = pending === null ? chunk : Buffer.concat([pending, chunk]);
        if (!client.data.busy) handle(client);
      },
    },
  });
}
