// Large bodies through the compiled gate: they stream, so the gate's memory stays flat.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { startStandInMattermost, type StandInMattermost } from "./support/stand-in-mattermost.ts";
import { SECRET_HEADER, TEST_SECRET, startGateProcess, type GateProcess } from "./support/gate-process.ts";

const MB = 1024 * 1024;
const TRANSFER_BYTES = 200 * MB;
/** Growth of the gate's resident memory that still counts as flat for a 200 MB body. */
const FLAT_MEMORY_BYTES = 80 * MB;

let mattermost: StandInMattermost;
let gate: GateProcess;

beforeAll(async () => {
  mattermost = await startStandInMattermost({ quiet: true });
  gate = await startGateProcess({ upstream: mattermost.url });
});
afterAll(async () => {
  await gate?.stop();
  await mattermost?.close();
});

function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kilobytes = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  return kilobytes * 1024;
}

/** Samples the gate's resident memory every 50 ms while `work` runs; returns the peak. */
async function peakMemoryDuring<T>(work: () => Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = residentBytes(gate.process.pid);
  const sampler = setInterval(() => (peak = Math.max(peak, residentBytes(gate.process.pid))), 50);
  try {
    const result = await work();
    return { result, peak };
  } finally {
    clearInterval(sampler);
  }
}

/** Uploads `size` bytes of a repeating pattern over a raw socket with Content-Length. */
function upload(size: number): Promise<{ status: string; body: string; sha256: string }> {
  const chunk = Buffer.alloc(256 * 1024);
  for (let index = 0; index < chunk.length; index++) chunk[index] = index % 251;
  const hash = createHash("sha256");
  return new Promise((resolve, reject) => {
    const socket = connect(gate.port, "127.0.0.1");
    let response = "";
    socket.on("data", (data) => (response += data.toString("latin1")));
    socket.on("end", () => {
      const split = response.indexOf("\r\n\r\n");
      resolve({ status: response.split("\r\n")[0]!, body: response.slice(split + 4), sha256: hash.digest("hex") });
    });
    socket.on("error", reject);
    socket.on("connect", async () => {
      socket.write(
        `POST /api/v4/files?channel_id=c1&filename=big.bin HTTP/1.1\r\nHost: mm.test\r\n${SECRET_HEADER}: ${TEST_SECRET}\r\n` +
          `Content-Type: application/octet-stream\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`,
      );
      let sent = 0;
      while (sent < size) {
        const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
        hash.update(piece);
        sent += piece.length;
        if (!socket.write(piece)) await new Promise((resolve) => socket.once("drain", resolve));
      }
    });
  });
}

describe("large transfers", () => {
  test("200 MB upload streams with flat memory", async () => {
    const before = residentBytes(gate.process.pid);
    const { result, peak } = await peakMemoryDuring(() => upload(TRANSFER_BYTES));
    expect(result.status).toBe("HTTP/1.1 201 Created");
    const reported = JSON.parse(result.body) as { bytes: number; sha256: string };
    expect(reported.bytes).toBe(TRANSFER_BYTES);
    expect(reported.sha256).toBe(result.sha256);
    console.log(`upload: gate RSS ${Math.round(before / MB)} MB before, ${Math.round(peak / MB)} MB peak`);
    expect(peak - before).toBeLessThan(FLAT_MEMORY_BYTES);
  }, 120_000);

  test("200 MB download streams with flat memory", async () => {
    const before = residentBytes(gate.process.pid);
    const { result, peak } = await peakMemoryDuring(async () => {
      const response = await fetch(`${gate.url}/api/v4/files/big?size=${TRANSFER_BYTES}`, {
        headers: { [SECRET_HEADER]: TEST_SECRET },
      });
      let received = 0;
      for await (const chunk of response.body!) received += chunk.length;
      return { status: response.status, length: response.headers.get("content-length"), received };
    });
    expect(result.status).toBe(200);
    expect(result.length).toBe(String(TRANSFER_BYTES));
    expect(result.received).toBe(TRANSFER_BYTES);
    console.log(`download: gate RSS ${Math.round(before / MB)} MB before, ${Math.round(peak / MB)} MB peak`);
    expect(peak - before).toBeLessThan(FLAT_MEMORY_BYTES);
  }, 120_000);

  test("large response keeps Content-Length on the wire", async () => {
    const size = 20 * MB;
    const head = await new Promise<string>((resolve, reject) => {
      const socket = connect(gate.port, "127.0.0.1", () =>
        socket.write(
          `GET /api/v4/files/big?size=${size} HTTP/1.1\r\nHost: mm.test\r\n${SECRET_HEADER}: ${TEST_SECRET}\r\nConnection: close\r\n\r\n`,
        ),
      );
      let data = "";
      socket.on("data", (chunk) => {
        data += chunk.toString("latin1");
        const end = data.indexOf("\r\n\r\n");
        if (end < 0) return;
        socket.destroy();
        resolve(data.slice(0, end).toLowerCase());
      });
      socket.on("error", reject);
    });
    expect(head).toStartWith("http/1.1 200");
    expect(head).toContain(`\r\ncontent-length: ${size}`);
    expect(head).not.toContain("transfer-encoding");
  });

  test("chunked body over the size limit gets 413", async () => {
    const smallGate = await startGateProcess({ upstream: mattermost.url, args: ["--max-body-size", "1MB"] });
    try {
      mattermost.clear();
      const chunks = async function* () {
        for (let index = 0; index < 40; index++) yield new Uint8Array(64 * 1024);
      };
      const response = await fetch(`${smallGate.url}/api/v4/files?channel_id=c1&filename=x`, {
        method: "POST",
        headers: { [SECRET_HEADER]: TEST_SECRET },
        body: chunks(),
      } as RequestInit);
      expect(response.status).toBe(413);
      // Mattermost may have seen the start of the request, but never its end.
      expect(mattermost.received.filter((request) => request.status === 201)).toEqual([]);
    } finally {
      await smallGate.stop();
    }
  });

  test("body over the size limit gets 413 and is not forwarded", async () => {
    const smallGate = await startGateProcess({ upstream: mattermost.url, args: ["--max-body-size", "1MB"] });
    try {
      mattermost.clear();
      const response = await fetch(`${smallGate.url}/api/v4/files?channel_id=c1&filename=x`, {
        method: "POST",
        headers: { [SECRET_HEADER]: TEST_SECRET },
        body: Buffer.alloc(2 * 1000 * 1000),
      });
      expect(response.status).toBe(413);
      expect(mattermost.received).toHaveLength(0);
    } finally {
      await smallGate.stop();
    }
  });
});
