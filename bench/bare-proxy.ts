// Bare Bun proxies without any gate logic, the floor for what the gate costs per request.
// They take the gate's --listen and --upstream flags and ignore the others, so that
// bench/ab.ts can run them next to a gate build:
//
//   bun bench/ab.ts --variant gate=dist/preauth-gate \
//     --variant bare="bun bench/bare-proxy.ts --style bare" \
//     --variant copying="bun bench/bare-proxy.ts --style copying"
//
// Styles:
//   bare     passes the request on and returns fetch()'s response as it is
//   copying  also copies and cleans the headers both ways, wires a client-abort and
//            timeout signal and buffers bodies up to 1 MiB, as src/proxy.ts does
// NOTE: neither style checks a secret, so never run one anywhere but on 127.0.0.1.
import { parseArgs } from "node:util";

const HOP_BY_HOP = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];
const BUFFERED_LIMIT = 1024 * 1024;
const TIMEOUT_MS = 600_000;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { style: { type: "string", default: "bare" }, listen: { type: "string" }, upstream: { type: "string" } },
  strict: false,
  allowPositionals: true,
});
const style = String(values.style);
const [hostname = "127.0.0.1", port = "0"] = String(values.listen ?? "127.0.0.1:0").split(":");
const upstream = String(values.upstream ?? "http://127.0.0.1:8065");
if (hostname !== "127.0.0.1") throw new Error(`--listen ${values.listen}: the bare proxy checks no secret and listens on 127.0.0.1 only`);
if (style !== "bare" && style !== "copying") throw new Error(`--style ${style}: expected bare or copying`);

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
