// End-to-end regression tests for the gate's own HTTP/1.1 engine (src/http1.ts, src/client.ts,
// src/exchange.ts, src/upstream.ts and src/wire.ts): pipelining, framing, timeouts, and what the
// gate does when a client or Mattermost misbehaves. Each test runs the compiled gate in front of a
// small raw upstream written here, which logs every byte it receives and responds as the test specifies.
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import fc from "fast-check";
import { SECRET_HEADER, TEST_SECRET, freePort, startGateProcess, type GateProcess } from "./support/gate-process.ts";

const SECRET_LINE = `${SECRET_HEADER}: ${TEST_SECRET}\r\n`;
/** Upper bound for every test, in ms. */
const TEST_TIMEOUT_MS = 15_000;
/**
 * Maximum wait for a response that a timeout produces, in ms. It covers the timeout of 1 s, up to
 * two runs of the gate's once-a-second sweep, and slack for a loaded machine.
 */
const TIMEOUT_RESPONSE_MS = 3_500;

/** Steps that undo what a test started, run after each test in reverse order. */
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop()!;
    try {
      await cleanup();
    } catch (error) {
      console.error("cleanup failed:", error);
    }
  }
});

/** Polls `condition` every 5 ms until it is true or `timeoutMs` passes. Returns whether it became true. */
async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await Bun.sleep(5);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies and message parsing shared by the upstream and the client side.

/**
 * Decodes a chunked body that starts at `start`. Returns the payload and the index just past the
 * trailer section, or null while the body is incomplete or its framing is invalid.
 */
function decodeChunked(buffer: Buffer, start: number): { payload: Buffer; end: number } | null {
  const pieces: Buffer[] = [];
  let offset = start;
  for (;;) {
    const lineEnd = buffer.indexOf("\r\n", offset);
    if (lineEnd < 0) return null;
    const sizeText = buffer.toString("latin1", offset, lineEnd).split(";")[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) return null;
    const size = Number.parseInt(sizeText, 16);
    if (size === 0) {
      let cursor = lineEnd + 2;
      for (;;) {
        const next = buffer.indexOf("\r\n", cursor);
        if (next < 0) return null;
        if (next === cursor) return { payload: Buffer.concat(pieces), end: next + 2 };
        cursor = next + 2;
      }
    }
    const dataStart = lineEnd + 2;
    if (buffer.length < dataStart + size + 2) return null;
    pieces.push(buffer.subarray(dataStart, dataStart + size));
    offset = dataStart + size + 2;
  }
}

/** Reads the header lines of `head` (which ends with the empty line), names in lower case. */
function headerLines(head: string): [string, string][] {
  const lines = head.split("\r\n").slice(1, -2);
  return lines.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
  });
}

/** Returns every value of header `name` in `headers` joined with ", ", or undefined. */
function headerValue(headers: readonly (readonly [string, string])[], name: string): string | undefined {
  const values = headers.filter(([lower]) => lower === name).map(([, value]) => value);
  return values.length === 0 ? undefined : values.join(", ");
}

interface ParsedResponse {
  readonly status: number;
  /** The head as received, status line and empty line included. */
  readonly head: string;
  readonly headers: readonly [string, string][];
  readonly framing: "none" | "length" | "chunked" | "close";
  /** The body payload, chunked framing removed. */
  readonly body: Buffer;
}

/**
 * Parses the complete responses at the start of `data`, interim (1xx) ones included, and returns
 * them with the bytes that follow. A body without length or chunking counts as complete only
 * once `closed` is set, when it runs to the end of `data`.
 */
function parseResponses(data: Buffer, closed: boolean): { responses: ParsedResponse[]; rest: Buffer } {
  const responses: ParsedResponse[] = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const head = rest.toString("latin1", 0, end + 4);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? Number.NaN);
    const headers = headerLines(head);
    const length = headerValue(headers, "content-length");
    const transferEncoding = headerValue(headers, "transfer-encoding");
    const bodyStart = end + 4;
    if (status < 200 || status === 204 || status === 304) {
      responses.push({ status, head, headers, framing: "none", body: Buffer.alloc(0) });
      rest = rest.subarray(bodyStart);
    } else if (transferEncoding !== undefined) {
      const decoded = decodeChunked(rest, bodyStart);
      if (decoded === null) break;
      responses.push({ status, head, headers, framing: "chunked", body: decoded.payload });
      rest = rest.subarray(decoded.end);
    } else if (length !== undefined) {
      const bodyEnd = bodyStart + Number(length);
      if (rest.length < bodyEnd) break;
      responses.push({ status, head, headers, framing: "length", body: rest.subarray(bodyStart, bodyEnd) });
      rest = rest.subarray(bodyEnd);
    } else {
      if (!closed) break;
      responses.push({ status, head, headers, framing: "close", body: rest.subarray(bodyStart) });
      rest = Buffer.alloc(0);
    }
  }
  return { responses, rest };
}

// ---------------------------------------------------------------------------------------------
// A raw stand-in upstream, which parses requests itself and lets each test decide how to respond.

interface UpstreamRequest {
  readonly peer: UpstreamPeer;
  /** Position of the request on its connection, from 0. */
  readonly index: number;
  /** The head as received, request line and empty line included. */
  readonly head: string;
  readonly method: string;
  readonly target: string;
  /** Header lines in arrival order, names in lower case. */
  readonly headers: readonly [string, string][];
  /** The body as framed on the wire. */
  readonly rawBody: Buffer;
  /** The body payload, chunked framing removed. */
  readonly body: Buffer;
}

/** One connection that the gate opened to the raw upstream. */
class UpstreamPeer {
  /** Every byte received, in arrival order. */
  readonly chunks: Buffer[] = [];
  readonly requests: UpstreamRequest[] = [];
  /** The gate closed or reset the connection. */
  closed = false;
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    readonly id: number,
    readonly socket: Socket,
  ) {}

  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Appends `chunk` and returns the requests it completed. */
  take(chunk: Buffer): UpstreamRequest[] {
    this.chunks.push(chunk);
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const complete: UpstreamRequest[] = [];
    for (;;) {
      const end = this.pending.indexOf("\r\n\r\n");
      if (end < 0) break;
      const head = this.pending.toString("latin1", 0, end + 4);
      const [method = "", target = ""] = head.slice(0, head.indexOf("\r\n")).split(" ");
      const headers = headerLines(head);
      const bodyStart = end + 4;
      let bodyEnd = bodyStart;
      let body: Buffer = Buffer.alloc(0);
      if (headerValue(headers, "transfer-encoding")?.toLowerCase() === "chunked") {
        const decoded = decodeChunked(this.pending, bodyStart);
        if (decoded === null) break;
        body = decoded.payload;
        bodyEnd = decoded.end;
      } else {
        bodyEnd = bodyStart + Number(headerValue(headers, "content-length") ?? 0);
        if (this.pending.length < bodyEnd) break;
        body = this.pending.subarray(bodyStart, bodyEnd);
      }
      const rawBody = this.pending.subarray(bodyStart, bodyEnd);
      const request = { peer: this, index: this.requests.length, head, method, target, headers, rawBody, body };
      this.requests.push(request);
      complete.push(request);
      this.pending = this.pending.subarray(bodyEnd);
    }
    return complete;
  }
}

type Responder = (request: UpstreamRequest) => void;

class RawUpstream {
  readonly peers: UpstreamPeer[] = [];
  /** Every complete request, over all connections, in arrival order. */
  readonly requests: UpstreamRequest[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Every byte received on every connection. */
  get bytesReceived(): number {
    return this.peers.reduce((sum, peer) => sum + peer.chunks.reduce((total, chunk) => total + chunk.length, 0), 0);
  }

  static async start(respond: Responder): Promise<RawUpstream> {
    let upstream: RawUpstream | null = null;
    const server = createServer((socket) => {
      const peer = new UpstreamPeer(upstream!.peers.length, socket);
      upstream!.peers.push(peer);
      socket.setNoDelay(true);
      socket.on("data", (chunk: Buffer) => {
        for (const request of peer.take(chunk)) {
          upstream!.requests.push(request);
          respond(request);
        }
      });
      socket.on("close", () => (peer.closed = true));
      socket.on("error", () => (peer.closed = true));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    upstream = new RawUpstream(server, (server.address() as { port: number }).port);
    return upstream;
  }

  close(): Promise<void> {
    for (const peer of this.peers) peer.socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Starts a raw upstream that calls `respond` for every complete request, and closes it after the test. */
async function startUpstream(respond: Responder): Promise<RawUpstream> {
  const upstream = await RawUpstream.start(respond);
  cleanups.push(() => upstream.close());
  return upstream;
}

/**
 * Starts the compiled gate in front of `upstream`, and stops it after the test. A shutdown grace
 * of 1 s keeps the stop short when a failed test leaves a request in flight.
 */
async function startGate(upstream: RawUpstream, args: readonly string[] = []): Promise<GateProcess> {
  const gate = await startGateProcess({ upstream: upstream.origin, args: ["--shutdown-grace", "1", ...args] });
  cleanups.push(async () => {
    const stopped = gate.stop();
    const inTime = await Promise.race([stopped.then(() => true), Bun.sleep(5_000).then(() => false)]);
    if (!inTime) gate.process.kill("SIGKILL");
    await stopped;
  });
  return gate;
}

/** Builds a response with Content-Length. */
function lengthResponse(body: string | Buffer, statusLine = "200 OK", extraHeaders = ""): Buffer {
  const payload = typeof body === "string" ? Buffer.from(body, "latin1") : body;
  const head = `HTTP/1.1 ${statusLine}\r\nContent-Type: text/plain\r\n${extraHeaders}Content-Length: ${payload.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, "latin1"), payload]);
}

/** Responds to every request with 200 and the request target as the body. */
const echoTarget: Responder = (request) => request.peer.write(lengthResponse(`served ${request.target}`));

/** Builds a GET request head for HTTP/1.1 with Host mm.test. */
function get(target: string, extraHeaders = ""): string {
  return `GET ${target} HTTP/1.1\r\nHost: mm.test\r\n${extraHeaders}\r\n`;
}

// ---------------------------------------------------------------------------------------------
// A raw client connection that records everything the gate sends.

class RawClient {
  readonly chunks: Buffer[] = [];
  /** The gate sent FIN. */
  ended = false;
  /** The connection is closed, cleanly or by a reset. */
  closed = false;
  /** The connection ended with an error, such as ECONNRESET. */
  error: Error | null = null;

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.chunks.push(chunk));
    socket.on("end", () => (this.ended = true));
    socket.on("error", (error) => (this.error = error));
    socket.on("close", () => (this.closed = true));
  }

  /** Connects to the gate on `port`. The connection is destroyed after the test. */
  static async open(port: number): Promise<RawClient> {
    const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    cleanups.push(() => socket.destroy());
    return new RawClient(socket);
  }

  /** Writes `data` and resolves once it is handed to the kernel. */
  send(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(typeof data === "string" ? Buffer.from(data, "latin1") : data, (error) =>
        error ? reject(error) : resolve(),
      );
    });
  }

  data(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.data().toString("latin1");
  }

  /** Parses the complete responses received so far. */
  responses(): ParsedResponse[] {
    return parseResponses(this.data(), this.ended || this.closed).responses;
  }

  /** Waits until `count` complete responses have arrived. Returns them, or fewer on timeout. */
  async waitForResponses(count: number, timeoutMs = 5_000): Promise<ParsedResponse[]> {
    await waitUntil(() => this.responses().length >= count, timeoutMs);
    return this.responses();
  }

  /** Waits until the gate has closed its side, with FIN or a reset. Returns whether it did. */
  waitForEnd(timeoutMs = 3_000): Promise<boolean> {
    return waitUntil(() => this.ended || this.closed, timeoutMs);
  }
}

/** Reads the resident set size of process `pid` from /proc, in MiB. */
function residentMebibytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kibibytes = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kibibytes === undefined) throw new Error(`no VmRSS line in /proc/${pid}/status`);
  return Number(kibibytes) / 1024;
}

// ---------------------------------------------------------------------------------------------

describe("pipelining", () => {
  test(
    "client that does not read stops the gate reading further requests",
    async () => {
      const requestCount = 3_000;
      const bodySize = 60_000;
      const body = Buffer.alloc(bodySize, "b");
      const upstream = await startUpstream((request) => {
        const index = /[?&]i=(\d+)/.exec(request.target)?.[1] ?? "none";
        const head = `HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nX-Index: ${index}\r\nContent-Length: ${bodySize}\r\n\r\n`;
        request.peer.write(Buffer.concat([Buffer.from(head, "latin1"), body]));
      });
      const gate = await startGate(upstream);

      const socket = connect({ port: gate.port, host: "127.0.0.1" });
      cleanups.push(() => socket.destroy());
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", () => resolve());
        socket.once("error", reject);
      });
      socket.pause();
      const pipeline = Array.from({ length: requestCount }, (_, index) => get(`/static/big.js?i=${index}`)).join("");
      socket.write(Buffer.from(pipeline, "latin1"));

      // 3,000 responses of 60,000 bytes are 180 MB. A gate that kept reading requests would
      // forward all of them within a second and hold the responses in memory.
      await Bun.sleep(2_000);
      const forwardedWhileBlocked = upstream.requests.length;
      expect(forwardedWhileBlocked).toBeGreaterThan(0);
      expect(forwardedWhileBlocked).toBeLessThan(200);
      expect(residentMebibytes(gate.process.pid)).toBeLessThan(200);
      await Bun.sleep(500);
      expect(upstream.requests.length).toBe(forwardedWhileBlocked);

      const indexes: string[] = [];
      const wrongBodies: number[] = [];
      let pending: Buffer = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        const parsed = parseResponses(pending, false);
        pending = parsed.rest;
        for (const response of parsed.responses) {
          const index = headerValue(response.headers, "x-index") ?? `status ${response.status}`;
          if (response.status !== 200 || !response.body.equals(body)) wrongBodies.push(indexes.length);
          indexes.push(index);
        }
      });
      socket.resume();

      expect(await waitUntil(() => indexes.length >= 10, 2_000)).toBe(true);
      expect(indexes.slice(0, 10)).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
      await waitUntil(() => indexes.length === requestCount, 8_000);
      expect(upstream.requests.length).toBeGreaterThan(forwardedWhileBlocked);
      expect(indexes).toHaveLength(requestCount);
      const firstOutOfOrder = indexes.findIndex((index, position) => index !== String(position));
      expect(firstOutOfOrder).toBe(-1);
      expect(wrongBodies).toEqual([]);
      expect(upstream.requests.map((request) => request.target)).toEqual(
        Array.from({ length: requestCount }, (_, index) => `/static/big.js?i=${index}`),
      );
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "pipelined requests are answered in order and checked one by one",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(
        get("/api/v4/users/me?first", SECRET_LINE) + get("/api/v4/users/me?second") + get("/static/third.js"),
      );

      const responses = await client.waitForResponses(3);
      expect(responses.map((response) => response.status)).toEqual([200, 403, 200]);
      expect(responses[0]!.body.toString()).toBe("served /api/v4/users/me?first");
      expect(headerValue(responses[1]!.headers, "x-reject-reason")).toBe("pre-auth");
      expect(responses[2]!.body.toString()).toBe("served /static/third.js");
      expect(upstream.requests.map((request) => request.target)).toEqual(["/api/v4/users/me?first", "/static/third.js"]);
      // A rejection of a request without a body keeps the connection open.
      expect(client.ended).toBe(false);
      await client.send(get("/static/fourth.js"));
      expect((await client.waitForResponses(4))[3]?.status).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "rejected request with a body closes the connection",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const hidden = get("/static/hidden.js");

      const together = await RawClient.open(gate.port);
      await together.send(
        `POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`,
      );
      expect(await together.waitForEnd()).toBe(true);
      const responses = together.responses();
      expect(responses).toHaveLength(1);
      expect(responses[0]!.status).toBe(403);
      expect(headerValue(responses[0]!.headers, "connection")).toBe("close");

      // The body follows only after the rejection has arrived.
      const later = await RawClient.open(gate.port);
      await later.send(`POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\nContent-Length: ${hidden.length}\r\n\r\n`);
      expect((await later.waitForResponses(1))[0]?.status).toBe(403);
      await later.send(hidden).catch(() => undefined);
      expect(await later.waitForEnd()).toBe(true);
      expect(later.responses()).toHaveLength(1);

      await Bun.sleep(300);
      expect(upstream.bytesReceived).toBe(0);
      expect(upstream.requests).toHaveLength(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("request heads", () => {
  const probeHead =
    "GET /api/v4/users/me?q=split%20head HTTP/1.1\r\nHost: mm.test\r\nX-Probe: one byte at a time\r\n" +
    `User-Agent: engine-test\r\n${SECRET_LINE}\r\n`;
  // The gate drops the secret and appends its forwarding headers, so the upstream head must
  // start with the client's lines other than the secret, unchanged and in order.
  const forwardedPrefix = probeHead.slice(0, probeHead.indexOf(SECRET_LINE));

  test(
    "head sent one byte at a time is forwarded intact",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      for (const byte of Buffer.from(probeHead, "latin1")) {
        await client.send(Buffer.of(byte));
        await Bun.sleep(1);
      }

      const responses = await client.waitForResponses(1);
      expect(responses[0]?.status).toBe(200);
      expect(upstream.requests).toHaveLength(1);
      expect(upstream.requests[0]!.target).toBe("/api/v4/users/me?q=split%20head");
      expect(upstream.requests[0]!.head.startsWith(forwardedPrefix)).toBe(true);
      expect(upstream.requests[0]!.head).not.toContain(TEST_SECRET);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "heads split at random points are forwarded intact",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const second = get("/static/second.js", "X-Second: yes\r\n");
      const stream = Buffer.from(probeHead + second, "latin1");

      await fc.assert(
        fc.asyncProperty(
          fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { minLength: 1, maxLength: 12 }),
          async (cuts) => {
            const before = upstream.requests.length;
            const client = await RawClient.open(gate.port);
            const bounds = [0, ...cuts.sort((a, b) => a - b), stream.length];
            for (let index = 1; index < bounds.length; index++) {
              await client.send(stream.subarray(bounds[index - 1], bounds[index]));
              await Bun.sleep(2);
            }
            const responses = await client.waitForResponses(2, 3_000);
            client.socket.destroy();
            expect(responses.map((response) => response.status)).toEqual([200, 200]);
            const forwarded = upstream.requests.slice(before);
            expect(forwarded.map((request) => request.target)).toEqual([
              "/api/v4/users/me?q=split%20head",
              "/static/second.js",
            ]);
            expect(forwarded[0]!.head.startsWith(forwardedPrefix)).toBe(true);
            expect(forwarded[1]!.head.startsWith(second.slice(0, -2))).toBe(true);
          },
        ),
        { numRuns: 25 },
      );
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "empty lines before a request line are ignored",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(`\r\n\r\n${get("/static/first.js")}\r\n${get("/static/second.js")}`);

      const responses = await client.waitForResponses(2);
      expect(responses.map((response) => response.status)).toEqual([200, 200]);
      expect(upstream.requests.map((request) => request.target)).toEqual(["/static/first.js", "/static/second.js"]);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "head with a bare LF gets 400 at once and closes",
    async () => {
      const upstream = await startUpstream(echoTarget);
      // The default client timeout of 60 s applies, so no timeout can produce the 400.
      const gate = await startGate(upstream);
      const heads = [
        "GET /static/a.js HTTP/1.1\nHost: mm.test\n\n",
        "GET /static/a.js HTTP/1.1\r\nHost: mm.test\nX-Other: 1\r\n",
        "GET /static/a.js HTTP/1.1\r\nHost: mm.test\nX-Other: 1\r\n\r\n",
      ];
      for (const head of heads) {
        const client = await RawClient.open(gate.port);
        const started = performance.now();
        await client.send(head);
        expect(await client.waitForEnd(1_000)).toBe(true);
        expect(performance.now() - started).toBeLessThan(1_000);
        const responses = client.responses();
        expect(responses).toHaveLength(1);
        expect(responses[0]!.status).toBe(400);
      }
      expect(upstream.bytesReceived).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("timeouts", () => {
  test(
    "stalled request body gets 408 and the upstream connection is closed",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream, ["--client-timeout", "1"]);
      const client = await RawClient.open(gate.port);

      const started = performance.now();
      await client.send(
        `POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Content-Length: 100\r\n\r\n0123456789`,
      );
      expect(await waitUntil(() => upstream.peers[0]?.received().toString("latin1").endsWith("0123456789") ?? false, 2_000)).toBe(true);

      const responses = await client.waitForResponses(1, TIMEOUT_RESPONSE_MS);
      const elapsed = performance.now() - started;
      expect(responses[0]?.status).toBe(408);
      expect(elapsed).toBeGreaterThan(900);
      expect(headerValue(responses[0]!.headers, "connection")).toBe("close");
      expect(await client.waitForEnd(1_000)).toBe(true);
      expect(await waitUntil(() => upstream.peers[0]!.closed, 1_000)).toBe(true);
      expect(upstream.requests).toHaveLength(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "upload slower than the upstream timeout still succeeds",
    async () => {
      // The upstream timeout starts once the body is complete: Mattermost cannot respond before.
      const upstream = await startUpstream((request) => request.peer.write(lengthResponse("stored", "201 Created")));
      const gate = await startGate(upstream, ["--upstream-timeout", "1", "--client-timeout", "5"]);
      const client = await RawClient.open(gate.port);

      await client.send(`POST /api/v4/files HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Content-Length: 8\r\n\r\n`);
      for (const byte of "01234567") {
        await Bun.sleep(300);
        await client.send(byte);
      }

      const responses = await client.waitForResponses(1, TIMEOUT_RESPONSE_MS);
      expect(responses[0]?.status).toBe(201);
      expect(upstream.requests).toHaveLength(1);
      expect(upstream.requests[0]!.body.toString()).toBe("01234567");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "stalled request head gets 408",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream, ["--client-timeout", "1"]);
      const client = await RawClient.open(gate.port);

      const started = performance.now();
      await client.send("GET /static/a.js HTTP/1.1\r\nHost: mm.test\r\n");

      const responses = await client.waitForResponses(1, TIMEOUT_RESPONSE_MS);
      expect(responses[0]?.status).toBe(408);
      expect(performance.now() - started).toBeGreaterThan(900);
      expect(await client.waitForEnd(1_000)).toBe(true);
      expect(upstream.bytesReceived).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "small response that stops arriving gets 504",
    async () => {
      const upstream = await startUpstream((request) =>
        request.peer.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789"),
      );
      const gate = await startGate(upstream, ["--upstream-timeout", "1"]);
      const client = await RawClient.open(gate.port);

      const started = performance.now();
      await client.send(get("/static/a.js"));

      const responses = await client.waitForResponses(1, TIMEOUT_RESPONSE_MS);
      expect(responses[0]?.status).toBe(504);
      expect(performance.now() - started).toBeGreaterThan(900);
      expect(responses[0]!.body.toString()).toContain("Gateway Timeout");
      expect(client.text()).not.toContain("200 OK");
      expect(await waitUntil(() => upstream.peers[0]!.closed, 1_000)).toBe(true);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "large response that stops arriving cuts the client connection",
    async () => {
      const partial = Buffer.alloc(100_000, "p");
      const upstream = await startUpstream((request) =>
        request.peer.write(
          Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000000\r\n\r\n"), partial]),
        ),
      );
      const gate = await startGate(upstream, ["--upstream-timeout", "1"]);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/a.js"));

      expect(await client.waitForEnd(TIMEOUT_RESPONSE_MS + 1_000)).toBe(true);
      const data = client.data();
      const headLength = data.indexOf("\r\n\r\n") + 4;
      expect(data.toString("latin1", 0, 15)).toBe("HTTP/1.1 200 OK");
      expect(data.length - headLength).toBe(partial.length);
      expect(client.responses()).toHaveLength(0);
      expect(await waitUntil(() => upstream.peers[0]!.closed, 1_000)).toBe(true);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("retries", () => {
  /** Responds to the first request on each connection, and closes a reused connection without responding. */
  const closeReused: Responder = (request) => {
    if (request.index === 0) request.peer.write(lengthResponse(`served ${request.target}`));
    else request.peer.socket.end();
  };

  test(
    "POST on a reused connection that closes is not sent again",
    async () => {
      const upstream = await startUpstream(closeReused);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/warm.js"));
      expect((await client.waitForResponses(1))[0]?.status).toBe(200);
      await client.send(`POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Content-Length: 2\r\n\r\n{}`);

      const responses = await client.waitForResponses(2);
      expect(responses[1]?.status).toBe(502);
      await Bun.sleep(500);
      const posts = upstream.requests.filter((request) => request.method === "POST");
      expect(posts).toHaveLength(1);
      // The POST went out on the pooled connection, so the case under test did happen.
      expect(posts[0]!.peer.id).toBe(0);
      expect(posts[0]!.index).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "GET on a reused connection that closes is retried once",
    async () => {
      const upstream = await startUpstream(closeReused);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/warm.js"));
      expect((await client.waitForResponses(1))[0]?.status).toBe(200);
      await client.send(get("/static/again.js"));

      const responses = await client.waitForResponses(2);
      expect(responses[1]?.status).toBe(200);
      expect(responses[1]!.body.toString()).toBe("served /static/again.js");
      await Bun.sleep(300);
      const attempts = upstream.requests.filter((request) => request.target === "/static/again.js");
      expect(attempts.map((request) => [request.peer.id, request.index])).toEqual([
        [0, 1],
        [1, 0],
      ]);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("response framing", () => {
  test(
    "transfer coding other than chunked gets 502",
    async () => {
      const upstream = await startUpstream((request) =>
        request.peer.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
      );
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/a.js"));

      const responses = await client.waitForResponses(1);
      expect(responses[0]?.status).toBe(502);
      expect(responses[0]!.body.toString()).toContain("Bad Gateway");
      expect(client.text()).not.toContain("200 OK");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "204 reaches the client without Content-Length",
    async () => {
      const upstream = await startUpstream((request) => {
        if (request.target === "/static/empty.js") {
          request.peer.write("HTTP/1.1 204 No Content\r\nX-Upstream: yes\r\nContent-Length: 8\r\n\r\n");
        } else {
          echoTarget(request);
        }
      });
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/empty.js") + get("/static/next.js"));

      const responses = await client.waitForResponses(2);
      expect(responses[0]?.status).toBe(204);
      expect(headerValue(responses[0]!.headers, "x-upstream")).toBe("yes");
      expect(headerValue(responses[0]!.headers, "content-length")).toBeUndefined();
      expect(responses[1]?.status).toBe(200);
      expect(responses[1]!.body.toString()).toBe("served /static/next.js");
    },
    TEST_TIMEOUT_MS,
  );

  /** Body sent in three writes and then ended by closing the connection. */
  const closeDelimitedBody = Buffer.concat([Buffer.alloc(20_000, "a"), Buffer.alloc(20_000, "b"), Buffer.alloc(20_000, "c")]);
  const closeDelimited: Responder = async (request) => {
    request.peer.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    for (let offset = 0; offset < closeDelimitedBody.length; offset += 20_000) {
      await Bun.sleep(20);
      request.peer.write(closeDelimitedBody.subarray(offset, offset + 20_000));
    }
    request.peer.socket.end();
  };

  test(
    "close-delimited response is re-chunked for HTTP/1.1",
    async () => {
      const upstream = await startUpstream(closeDelimited);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/a.js"));

      const responses = await client.waitForResponses(1);
      expect(responses[0]?.status).toBe(200);
      expect(responses[0]!.framing).toBe("chunked");
      expect(responses[0]!.body.equals(closeDelimitedBody)).toBe(true);
      expect(headerValue(responses[0]!.headers, "connection")).toBeUndefined();
      // The client connection stays usable after the upstream connection ended.
      await client.send(get("/static/b.js"));
      const second = (await client.waitForResponses(2))[1];
      expect(second?.status).toBe(200);
      expect(second!.body.equals(closeDelimitedBody)).toBe(true);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "close-delimited response reaches HTTP/1.0 as is",
    async () => {
      const upstream = await startUpstream(closeDelimited);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send("GET /static/a.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");

      expect(await client.waitForEnd()).toBe(true);
      const responses = client.responses();
      expect(responses).toHaveLength(1);
      expect(responses[0]!.status).toBe(200);
      expect(responses[0]!.framing).toBe("close");
      expect(headerValue(responses[0]!.headers, "connection")).toBe("close");
      expect(responses[0]!.body.equals(closeDelimitedBody)).toBe(true);
      expect(client.error).toBeNull();
    },
    TEST_TIMEOUT_MS,
  );
});

describe("request bodies", () => {
  /** Reads preauth_gate_bytes_total{direction="in"} from the admin listener. */
  async function bytesIn(adminPort: number): Promise<number> {
    const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    const value = /^preauth_gate_bytes_total\{direction="in"\} (\d+)$/m.exec(metrics)?.[1];
    if (value === undefined) throw new Error(`no bytes_total in the metrics:\n${metrics}`);
    return Number(value);
  }

  test(
    "chunked upload is re-chunked without extensions or trailer",
    async () => {
      const upstream = await startUpstream((request) => request.peer.write(lengthResponse("created", "201 Created")));
      const adminPort = await freePort();
      const gate = await startGate(upstream, ["--max-body-size", "1000", "--admin-listen", `127.0.0.1:${adminPort}`]);
      const before = await bytesIn(adminPort);
      const client = await RawClient.open(gate.port);

      await client.send(
        `POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n` +
          "5;name=value\r\nhello\r\n6;flag\r\n world\r\n0;last=yes\r\nX-Checksum: abc\r\n\r\n",
      );

      const responses = await client.waitForResponses(1);
      expect(responses[0]?.status).toBe(201);
      expect(upstream.requests).toHaveLength(1);
      const forwarded = upstream.requests[0]!;
      expect(forwarded.body.toString()).toBe("hello world");
      expect(headerValue(forwarded.headers, "transfer-encoding")).toBe("chunked");
      expect(headerValue(forwarded.headers, "content-length")).toBeUndefined();
      expect(headerValue(forwarded.headers, "trailer")).toBeUndefined();
      const rawBody = forwarded.rawBody.toString("latin1");
      expect(rawBody).not.toContain(";");
      expect(rawBody).not.toContain("X-Checksum");
      expect(rawBody.endsWith("0\r\n\r\n")).toBe(true);
      expect((await bytesIn(adminPort)) - before).toBe("hello world".length);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "chunked upload over the size limit gets 413",
    async () => {
      const upstream = await startUpstream((request) => request.peer.write(lengthResponse("created", "201 Created")));
      const adminPort = await freePort();
      const gate = await startGate(upstream, ["--max-body-size", "1000", "--admin-listen", `127.0.0.1:${adminPort}`]);
      const before = await bytesIn(adminPort);
      const client = await RawClient.open(gate.port);
      const chunk = `190\r\n${"x".repeat(400)}\r\n`;

      await client.send(`POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Transfer-Encoding: chunked\r\n\r\n${chunk}`);
      // Wait until the head and first chunk have gone upstream, so the limit applies mid-stream.
      expect(await waitUntil(() => upstream.bytesReceived > 400, 2_000)).toBe(true);
      await client.send(chunk + chunk + "0\r\n\r\n").catch(() => undefined);

      const responses = await client.waitForResponses(1);
      expect(responses[0]?.status).toBe(413);
      expect(responses[0]!.body.toString()).toContain("Payload Too Large");
      expect(await client.waitForEnd()).toBe(true);
      expect(await waitUntil(() => upstream.peers[0]!.closed, 1_000)).toBe(true);
      expect(upstream.requests).toHaveLength(0);
      // The bytes the gate read count as received, the rejected ones included.
      expect((await bytesIn(adminPort)) - before).toBeGreaterThan(1000);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "Expect 100-continue with the secret gets 100 first",
    async () => {
      const upstream = await startUpstream((request) => request.peer.write(lengthResponse("created", "201 Created")));
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(
        `POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\n${SECRET_LINE}Expect: 100-continue\r\nContent-Length: 2\r\n\r\n`,
      );
      expect(await waitUntil(() => client.responses().length >= 1, 2_000)).toBe(true);
      expect(client.text()).toBe("HTTP/1.1 100 Continue\r\n\r\n");
      await client.send("{}");

      const responses = await client.waitForResponses(2);
      expect(responses.map((response) => response.status)).toEqual([100, 201]);
      expect(upstream.requests[0]?.body.toString()).toBe("{}");
      expect(headerValue(upstream.requests[0]!.headers, "expect")).toBeUndefined();
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "Expect 100-continue without the secret gets 403 and no 100",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send("POST /api/v4/posts HTTP/1.1\r\nHost: mm.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");

      expect(await client.waitForEnd()).toBe(true);
      const responses = client.responses();
      expect(responses.map((response) => response.status)).toEqual([403]);
      expect(client.text()).not.toContain("100 Continue");
      expect(upstream.bytesReceived).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("connections", () => {
  test(
    "HTTP/1.0 request without Host gets the upstream's Host",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send("GET /static/a.js HTTP/1.0\r\n\r\n");

      expect(await client.waitForEnd()).toBe(true);
      const responses = client.responses();
      expect(responses.map((response) => response.status)).toEqual([200]);
      expect(headerValue(responses[0]!.headers, "connection")).toBe("close");
      expect(upstream.requests).toHaveLength(1);
      expect(headerValue(upstream.requests[0]!.headers, "host")).toBe(`127.0.0.1:${upstream.port}`);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "HTTP/1.0 keep-alive connection takes a second request",
    async () => {
      const upstream = await startUpstream(echoTarget);
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send("GET /static/a.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      const first = (await client.waitForResponses(1))[0];
      expect(first?.status).toBe(200);
      expect(headerValue(first!.headers, "connection")).toBe("keep-alive");
      expect(client.ended).toBe(false);

      await client.send("GET /static/b.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      const second = (await client.waitForResponses(2))[1];
      expect(second?.status).toBe(200);
      expect(second!.body.toString()).toBe("served /static/b.js");
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "gate error to HTTP/1.0 keep-alive keeps the connection",
    async () => {
      // The first request gets 502 from the gate, because the upstream closes without responding.
      let first = true;
      const upstream = await startUpstream((request) => {
        if (first) {
          first = false;
          request.peer.socket.destroy();
        } else {
          echoTarget(request);
        }
      });
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send("GET /static/a.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      const failed = (await client.waitForResponses(1))[0];
      expect(failed?.status).toBe(502);
      expect(headerValue(failed!.headers, "connection")).toBe("keep-alive");

      await client.send("GET /static/b.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      const second = (await client.waitForResponses(2))[1];
      expect(second?.status).toBe(200);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "client that half-closes still gets the full response",
    async () => {
      const body = Buffer.alloc(1_000_000, "h");
      const upstream = await startUpstream(async (request) => {
        // The response starts after the gate has seen the client's FIN.
        await Bun.sleep(200);
        request.peer.write(lengthResponse(body));
      });
      const gate = await startGate(upstream);
      const client = await RawClient.open(gate.port);

      await client.send(get("/static/a.js") + get("/static/b.js"));
      client.socket.end();

      expect(await client.waitForEnd(5_000)).toBe(true);
      const responses = client.responses();
      expect(responses.map((response) => response.status)).toEqual([200, 200]);
      expect(responses[0]!.body.equals(body)).toBe(true);
      expect(responses[1]!.body.equals(body)).toBe(true);
      expect(client.error).toBeNull();
      expect(upstream.requests.map((request) => request.target)).toEqual(["/static/a.js", "/static/b.js"]);
    },
    TEST_TIMEOUT_MS,
  );
});
