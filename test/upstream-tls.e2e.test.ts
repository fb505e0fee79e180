// An https upstream: the gate connects with TLS, checks Mattermost's certificate and
// forwards requests over the connection.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCertificate } from "./support/certificates.ts";
import { SECRET_HEADER, startGateProcess, TEST_SECRET, type GateProcess } from "./support/gate-process.ts";

const directory = mkdtempSync(join(tmpdir(), "preauth-gate-upstream-tls-"));

/**
 * Starts a TLS upstream that responds to every request with 200 and the request line it
 * read, records each request head and closes after each response.
 */
function startTlsUpstream(files: { cert: string; key: string }): { listener: TCPSocketListener<{ head: string }>; heads: string[] } {
  const heads: string[] = [];
  const listener = Bun.listen<{ head: string }>({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") },
    socket: {
      open(socket) {
        socket.data = { head: "" };
      },
      data(socket, chunk) {
        socket.data.head += chunk.toString("latin1");
        const end = socket.data.head.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = socket.data.head.slice(0, end);
        heads.push(head);
        const body = head.split("\r\n")[0]!;
        socket.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      },
    },
  });
  return { listener, heads };
}

const trusted = makeCertificate(directory, "mattermost");
const untrusted = makeCertificate(directory, "impostor");
const upstream = startTlsUpstream(trusted);
const impostor = startTlsUpstream(untrusted);
let gate: GateProcess;
let impostorGate: GateProcess;

beforeAll(async () => {
  // The gate trusts the stand-in's self-signed certificate through NODE_EXTRA_CA_CERTS.
  const env = { NODE_EXTRA_CA_CERTS: trusted.cert };
  gate = await startGateProcess({ upstream: `https://127.0.0.1:${upstream.listener.port}`, env });
  impostorGate = await startGateProcess({ upstream: `https://127.0.0.1:${impostor.listener.port}`, env });
});

afterAll(async () => {
  await gate?.stop();
  await impostorGate?.stop();
  upstream.listener.stop(true);
  impostor.listener.stop(true);
  rmSync(directory, { recursive: true, force: true });
});

describe("https upstream", () => {
  test("trusted certificate: requests forwarded", async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const response = await fetch(`${gate.url}/api/v4/users/me?n=${attempt}`, { headers: { [SECRET_HEADER]: TEST_SECRET } });
      expect(response.status).toBe(200);
      expect(await response.text()).toBe(`GET /api/v4/users/me?n=${attempt} HTTP/1.1`);
    }
    expect(upstream.heads).toHaveLength(3);
    for (const head of upstream.heads) expect(head.toLowerCase()).not.toContain(SECRET_HEADER.toLowerCase());
  });

  test("untrusted certificate: 502, nothing sent", async () => {
    const response = await fetch(`${impostorGate.url}/api/v4/users/me`, { headers: { [SECRET_HEADER]: TEST_SECRET } });
    expect(response.status).toBe(502);
    expect(impostor.heads).toHaveLength(0);
    expect(impostorGate.output()).toContain('"error":"DEPTH_ZERO_SELF_SIGNED_CERT"');
  });
});
