// Sends generated and hand-written requests without the secret to the compiled gate over
// real sockets, and reads from the stand-in Mattermost's own log that none of them reached
// a route outside the whitelist.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import fc from "fast-check";
import { GATE_BINARY, startGateProcess, TEST_SECRET, type GateProcess } from "./support/gate-process.ts";
import { getRequest, RawHttpConnection, sendAll } from "./support/raw-http.ts";
import type { ModelOptions } from "./support/reference-model.ts";
import { anyTarget, printable } from "./support/request-targets.ts";
import { startStandInMattermost, type StandInMattermost } from "./support/stand-in-mattermost.ts";
import { reachOutsideWhitelist } from "./support/upstream-reach.ts";

const GENERATED_COUNT = 5_000;
const CONNECTIONS = 4;
const OPTIONS: ModelOptions = { groups: ["saml", "openid", "oauth"], services: [] };

let mattermost: StandInMattermost;
let gate: GateProcess;

beforeAll(async () => {
  mattermost = await startStandInMattermost({ quiet: true });
  gate = await startGateProcess({ upstream: mattermost.url, args: ["--allow", "saml,openid,oauth"] });
}, 30_000);

afterAll(async () => {
  await gate?.stop();
  await mattermost?.close();
});

/** Lists every logged request that reached Mattermost outside the whitelist. */
function reachedOutsideWhitelist(): string[] {
  const problems: string[] = [];
  for (const request of mattermost.received) {
    const problem = reachOutsideWhitelist(request, OPTIONS);
    if (problem !== null) problems.push(problem);
  }
  return problems;
}

/** Writes raw bytes on a fresh connection and returns everything read until the server closes. */
function exchange(bytes: Buffer, timeoutMs = 1_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(gate.port, "127.0.0.1", () => socket.write(bytes));
    let data = "";
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (data += chunk));
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.on("error", () => {});
  });
}

describe("requests without the secret on the wire", () => {
  test("generated requests reach only whitelisted routes", async () => {
    mattermost.clear();
    const probes = fc.sample(anyTarget, { numRuns: GENERATED_COUNT, seed: 20_260_103 }).filter((probe) => !/[\r\n]/.test(probe.target));
    const host = `127.0.0.1:${gate.port}`;
    const started = performance.now();
    const responses = await sendAll(gate.port, probes.map((probe) => getRequest(probe.target, host)), CONNECTIONS);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log("%s", `${probes.length} generated requests in ${seconds} s, ${mattermost.received.length} reached Mattermost`);

    const statuses = new Map<string, number>();
    for (const response of responses) {
      const status = String(response.status ?? "no response");
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    console.log("%s", `responses by status: ${[...statuses].map(([status, count]) => `${status} x${count}`).join(", ")}`);

    expect(reachedOutsideWhitelist()).toEqual([]);
    // The gate matches the raw target and forwards it unchanged, so every path that
    // reached Mattermost is one that a client sent.
    const sentPaths = new Set(probes.map((probe) => probe.target.split("?")[0]!));
    const rewritten = mattermost.received
      .map((entry) => entry.target.split("?")[0]!)
      .filter((path) => !sentPaths.has(path));
    expect(rewritten).toEqual([]);
    // Bun's HTTP parser itself responds with 505 to a request line it cannot split, such as
    // one with a space, tab or control character in the target. Such a request never
    // reaches the gate's code.
    const gateErrors = probes
      .map((probe, index) => ({ probe, status: responses[index]!.status }))
      .filter(({ status }) => status !== null && status >= 500 && status !== 505)
      .map(({ probe, status }) => `${probe}: ${status}`);
    expect(gateErrors).toEqual([]);
  }, 60_000);

  const port = () => gate.port;
  /** Builds a GET request for `target` with `Connection: close`. */
  const closing = (target: string | Buffer) => getRequest(target, "h", "Connection: close\r\n");
  // Request lines that an HTTP client library would refuse to send or would rewrite.
  const RAW_REQUESTS: readonly { name: string; bytes: () => Buffer }[] = [
    { name: "encoded slashes after dot segments", bytes: () => closing("/static/..%2f..%2fapi/v4/users/me") },
    { name: "backslash dot segments", bytes: () => closing("/static\\..\\api/v4/users/me") },
    { name: "absolute form", bytes: () => closing(`http://127.0.0.1:${port()}/api/v4/users/me`) },
    { name: "absolute form with dot segments", bytes: () => closing(`http://127.0.0.1:${port()}/static/../api/v4/users/me`) },
    { name: "absolute form with backslashes", bytes: () => closing(`http://127.0.0.1:${port()}\\static\\..\\api/v4/users/me`) },
    { name: "absolute form of another host", bytes: () => closing("http://mattermost.invalid/static/../api/v4/users/me") },
    { name: "fragment after a whitelisted path", bytes: () => closing("/api/v4/config/client#/../../users/me") },
    { name: "fragment with dot segments", bytes: () => closing("/static/x#/../../../api/v4/users/me") },
    { name: "tab in the target", bytes: () => closing("/static/\t../../api/v4/users/me") },
    { name: "space in the target", bytes: () => closing("/static/ ../../api/v4/users/me") },
    { name: "tabs as separators", bytes: () => Buffer.from("GET\t/api/v4/users/me\tHTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") },
    { name: "overlong UTF-8 dots, encoded", bytes: () => closing("/static/%c0%ae%c0%ae/api/v4/users/me") },
    { name: "overlong UTF-8 dots, raw", bytes: () => closing(Buffer.from("/static/\xc0\xae\xc0\xae/api/v4/users/me", "latin1")) },
    { name: "overlong UTF-8 slash", bytes: () => closing("/static/..%c0%af..%c0%afapi/v4/users/me") },
    { name: "semicolon dot segment", bytes: () => closing("/static/..;/api/v4/users/me") },
    { name: "leading double slash", bytes: () => closing("//api/v4/users/me") },
    { name: "double slash to a whitelisted path", bytes: () => closing("//static/app.js") },
    { name: "NUL escape", bytes: () => closing("/static/x%00/../../api/v4/users/me") },
    { name: "encoded newline after a regex path", bytes: () => closing("/oauth/gitlab/complete%0a") },
    { name: "bare line feeds", bytes: () => Buffer.from("GET /api/v4/users/me HTTP/1.1\nHost: h\nConnection: close\n\n") },
    { name: "lower-case method", bytes: () => Buffer.from("get /api/v4/users/me HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") },
    { name: "HTTP/1.0 without Host", bytes: () => Buffer.from("GET /api/v4/users/me HTTP/1.0\r\n\r\n") },
    { name: "asterisk form", bytes: () => Buffer.from("OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") },
    { name: "CONNECT", bytes: () => Buffer.from(`CONNECT 127.0.0.1:${port()} HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\n\r\n`) },
    { name: "empty secret header", bytes: () => getRequest("/api/v4/users/me", "h", "X-Mattermost-Preauth-Secret: \r\nConnection: close\r\n") },
    { name: "WebSocket upgrade", bytes: () => getRequest("/api/v4/websocket", "h", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") },
    { name: "pipelined second request", bytes: () => Buffer.concat([getRequest("/static/app.js", "h"), closing("/api/v4/users/me")]) },
    {
      name: "request smuggled in a body",
      bytes: () => {
        const smuggled = "GET /api/v4/users/me HTTP/1.1\r\nHost: h\r\n\r\n";
        const body = `0\r\n\r\n${smuggled}`;
        return Buffer.from(
          `POST /static/app.js HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`,
        );
      },
    },
    {
      name: "request smuggled after a short body",
      bytes: () =>
        Buffer.from(
          "POST /static/app.js HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /api/v4/users/me HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        ),
    },
  ];

  test("hand-written request lines reach only whitelisted routes", async () => {
    const report: string[] = [];
    const problems: string[] = [];
    for (const request of RAW_REQUESTS) {
      mattermost.clear();
      const response = await exchange(request.bytes());
      const statuses = [...response.matchAll(/^HTTP\/1\.[01] (\d{3})/gm)].map((match) => match[1]).join(", ");
      const reached = mattermost.received.map((entry) => `${printable(entry.target)} (${entry.route ?? "no route"})`);
      report.push(`${request.name}: ${statuses || "no response"}${reached.length > 0 ? ` -> ${reached.join(", ")}` : ""}`);
      for (const problem of reachedOutsideWhitelist()) problems.push(`${request.name}: ${problem}`);
    }
    console.log("%s", report.join("\n"));
    expect(problems).toEqual([]);
  }, 30_000);

  const EXPLAINED_TARGETS = [
    "/static/app.js",
    "/static/../api/v4/users/me",
    "/static\\app.js",
    "/api/v4/users/../config/client",
    "/api/v4/config/client#x",
    "//mattermost.invalid/static/app.js",
    "/\\mattermost.invalid/static/app.js",
  ];

  test("explain predicts what the server does", async () => {
    const connection = new RawHttpConnection(gate.port);
    const mismatches: string[] = [];
    for (const target of EXPLAINED_TARGETS) {
      const explained = Bun.spawnSync([GATE_BINARY, "explain", target, "--allow", "saml,openid,oauth"], {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", PREAUTH_GATE_SECRET: TEST_SECRET },
      });
      const predicted = explained.stdout.toString().includes("outcome: forwarded without the secret");
      mattermost.clear();
      await connection.send(getRequest(target, "h"));
      const forwarded = mattermost.received.length > 0;
      if (predicted !== forwarded) {
        mismatches.push(`GET ${printable(target)}: explain says ${predicted ? "forwarded" : "not forwarded"}, the server ${forwarded ? "forwarded it" : "did not"}`);
      }
    }
    connection.close();
    expect(mismatches).toEqual([]);
  });
});
