// Tests of the stand-in Mattermost server over real sockets on 127.0.0.1. Requests whose
// exact bytes matter are written by hand to a node:net socket.

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { gunzipSync } from "node:zlib";

import { cleanPath, checkRequestTarget } from "./support/mattermost-paths.ts";
import {
  BENCH_STATIC_BYTES,
  expectedDownloadBytes,
  startStandInMattermost,
  type ReceivedRequest,
  type StandInMattermost,
} from "./support/stand-in-mattermost.ts";

interface RawResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

function headerValues(response: RawResponse, name: string): string[] {
  return response.headers.filter(([key]) => key.toLowerCase() === name).map(([, value]) => value);
}

function header(response: RawResponse, name: string): string | undefined {
  return headerValues(response, name)[0];
}

/**
 * Parses one response from the front of `buffer`. Returns null when more bytes are
 * needed. The server under test always sends Content-Length, except for statuses
 * without a body.
 */
function parseResponse(buffer: Buffer, isHead: boolean): { response: RawResponse; rest: Buffer } | null {
  const end = buffer.indexOf("\r\n\r\n");
  if (end === -1) return null;
  const lines = buffer.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(lines[0]?.split(" ")[1]);
  const headers = lines.slice(1).map((line): [string, string] => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon), line.slice(colon + 1).trim()];
  });
  const response: RawResponse = { status, headers, body: Buffer.alloc(0) };
  const noBody = isHead || status === 101 || status === 204 || status === 304;
  const length = noBody ? 0 : Number(header(response, "content-length") ?? 0);
  const bodyStart = end + 4;
  if (buffer.length < bodyStart + length) return null;
  response.body = Buffer.from(buffer.subarray(bodyStart, bodyStart + length));
  return { response, rest: buffer.subarray(bodyStart + length) };
}

/** Writes raw requests on one connection and reads one response per request. */
function rawRequests(port: number, requests: readonly string[]): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const responses: RawResponse[] = [];
    let buffer: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`timed out after ${responses.length} of ${requests.length} responses`));
    }, 5000);
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const isHead = requests[responses.length]?.startsWith("HEAD ") ?? false;
        const parsed = parseResponse(buffer, isHead);
        if (parsed === null) break;
        responses.push(parsed.response);
        buffer = parsed.rest;
        if (responses.length === requests.length) {
          clearTimeout(timer);
          socket.destroy();
          resolve(responses);
          return;
        }
      }
    });
    socket.on("error", reject);
    socket.on("close", () => {
      clearTimeout(timer);
      if (responses.length < requests.length) {
        reject(new Error(`connection closed after ${responses.length} of ${requests.length} responses`));
      }
    });
    socket.write(requests.join(""));
  });
}

async function rawRequest(port: number, request: string): Promise<RawResponse> {
  const [response] = await rawRequests(port, [request]);
  return response!;
}

function get(target: string, extraHeaders = ""): string {
  return `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extraHeaders}\r\n`;
}

let standIn: StandInMattermost;

beforeAll(async () => {
  standIn = await startStandInMattermost({ quiet: true });
});

afterAll(async () => {
  await standIn.close();
});

beforeEach(() => {
  standIn.clear();
});

function lastReceived(): ReceivedRequest {
  const record = standIn.received.at(-1);
  if (record === undefined) throw new Error("the stand-in received no request");
  return record;
}

describe("path cleaning", () => {
  test("cleanPath matches Go path.Clean plus trailing slash", () => {
    const cases: Array<[string, string]> = [
      ["", "/"],
      ["/", "/"],
      ["//", "/"],
      ["/a//b", "/a/b"],
      ["/a/./b", "/a/b"],
      ["/a/../b", "/b"],
      ["/../a", "/a"],
      ["/a/b/..", "/a"],
      ["/a/b/../", "/a/"],
      ["/a/.", "/a"],
      ["/a/", "/a/"],
      ["/a\\..\\b", "/a\\..\\b"],
    ];
    for (const [input, expected] of cases) {
      expect(`${input} -> ${cleanPath(input)}`).toBe(`${input} -> ${expected}`);
    }
  });

  test("invalid percent-escape is a 400", () => {
    expect(checkRequestTarget("/a%zz").kind).toBe("invalid");
    expect(checkRequestTarget("/a%2").kind).toBe("invalid");
    expect(checkRequestTarget("relative").kind).toBe("invalid");
  });

  test("absolute-form target routes by its path", () => {
    expect(checkRequestTarget("http://example.com/api/v4/system/ping?x=1")).toEqual({
      kind: "route",
      path: "/api/v4/system/ping",
      query: "x=1",
    });
  });
});

describe("raw request targets", () => {
  test("logged exactly as sent", async () => {
    const targets = [
      "/static/../api/v4/users/me",
      "/static/%2e%2e/api/v4/users/me",
      "/api/v4/users/me;x=1",
      "/static\\..\\api\\v4\\users\\me",
      "/api/v4/config/client?format=old&device_id=android_rn-v2:abc%2F",
      "/api/v4/users/me#frag",
    ];
    await rawRequests(standIn.port, targets.map((target) => get(target)));
    expect(standIn.received.map((record) => record.target)).toEqual(targets);
    expect(standIn.received[4]!.path).toBe("/api/v4/config/client");
    expect(standIn.received[5]!.path).toBe("/api/v4/users/me#frag");
  });

  test("headers logged in arrival order", async () => {
    await rawRequest(standIn.port, get("/api/v4/system/ping", "X-Dup: one\r\nx-dup: two\r\nCookie: a=1\r\n"));
    const record = lastReceived();
    expect(record.headers["x-dup"]).toEqual(["one", "two"]);
    expect(record.headers["cookie"]).toEqual(["a=1"]);
    expect(record.rawHeaders).toEqual(["Host", "127.0.0.1", "X-Dup", "one", "x-dup", "two", "Cookie", "a=1"]);
    expect(record.route).toBe("system-ping");
    expect(record.status).toBe(200);
  });

  const redirects: Array<[string, string]> = [
    ["/static/../api/v4/users/me", "/api/v4/users/me"],
    ["/static/%2e%2e/api/v4/users/me", "/api/v4/users/me"],
    ["/static/%2E%2E/api/v4/users/me", "/api/v4/users/me"],
    ["/static/..%2fapi/v4/users/me", "/api/v4/users/me"],
    ["//api/v4/users/me", "/api/v4/users/me"],
    ["/api/v4/users/me#x", "/api/v4/users/me"],
    ["/api%2Fv4/users/me", "/api/v4/users/me"],
    ["/api/v4/users/me%00", "/api/v4/users/me"],
    ["/api/v4/./users/me?a=1&b=%2F", "/api/v4/users/me?a=1&b=%2F"],
    ["/static/x/../../api/v4/users/me/", "/api/v4/users/me/"],
    ["/api/v4/users/me?x=1#y", "/api/v4/users/me?x=1"],
    ["/static/%2e%2e/api/v4/users/%3Fme", "/api/v4/users/%3Fme"],
  ];
  for (const [target, location] of redirects) {
    test(`301 for ${target}`, async () => {
      const response = await rawRequest(standIn.port, get(target));
      expect(response.status).toBe(301);
      expect(header(response, "location")).toBe(location);
      expect(standIn.received).toHaveLength(1);
      expect(lastReceived().route).toBe("redirect");
      expect(lastReceived().status).toBe(301);
      expect(lastReceived().target).toBe(target);
    });
  }

  test("backslash and semicolon are not separators", async () => {
    const responses = await rawRequests(standIn.port, [
      get("/api/v4/users/me;x"),
      get("/static\\..\\api\\v4\\users\\me"),
      get("/static/..\\api\\v4\\users\\me"),
    ]);
    expect(responses.map((response) => response.status)).toEqual([404, 404, 200]);
    expect(standIn.received.map((record) => record.route)).toEqual([null, null, "static"]);
  });

  test("routing is case- and trailing-slash-sensitive", async () => {
    const responses = await rawRequests(standIn.port, [
      get("/API/v4/users/me"),
      get("/api/v4/users/me/"),
      get("/api/v4/users/me"),
    ]);
    expect(responses.map((response) => response.status)).toEqual([404, 404, 200]);
  });

  test("routes match the decoded path", async () => {
    const response = await rawRequest(standIn.port, get("/api/v4/users/m%65"));
    expect(response.status).toBe(200);
    expect(lastReceived().route).toBe("users-me");
    expect(lastReceived().target).toBe("/api/v4/users/m%65");
  });

  test("invalid percent-escape answers 400", async () => {
    const response = await rawRequest(standIn.port, get("/api/v4/users/m%zz"));
    expect(response.status).toBe(400);
    expect(lastReceived().route).toBeNull();
  });

  test("404 body carries Mattermost's error id", async () => {
    const response = await rawRequest(standIn.port, get("/api/v4/nothing-here"));
    expect(response.status).toBe(404);
    expect(JSON.parse(response.body.toString()).id).toBe("api.context.404.app_error");
    expect(lastReceived().route).toBeNull();
    expect(lastReceived().status).toBe(404);
  });

  test("keep-alive serves many requests on one connection", async () => {
    const requests = Array.from({ length: 50 }, (_, index) => get(`/api/v4/system/ping?n=${index}`));
    const responses = await rawRequests(standIn.port, requests);
    expect(responses).toHaveLength(50);
    expect(responses.every((response) => response.status === 200)).toBe(true);
    expect(standIn.received).toHaveLength(50);
  });
});

describe("routes", () => {
  test("login sets three separate cookies and Token", async () => {
    const response = await fetch(`${standIn.url}/api/v4/users/login`, {
      method: "POST",
      body: JSON.stringify({ login_id: "someone", password: "secret" }),
    });
    expect(response.status).toBe(200);
    const cookies = response.headers.getSetCookie();
    expect(cookies).toHaveLength(3);
    expect(cookies[0]).toMatch(/^MMAUTHTOKEN=[a-z0-9]+; Path=\/; HttpOnly$/);
    expect(cookies[1]).toMatch(/^MMUSERID=[a-z0-9]+; Path=\/$/);
    expect(cookies[2]).toMatch(/^MMCSRF=[a-z0-9]+; Path=\/$/);
    const token = /^MMAUTHTOKEN=([a-z0-9]+);/.exec(cookies[0]!)?.[1];
    expect(response.headers.get("token")).toBe(token!);
    expect(lastReceived().bodyBytes).toBe(42);
  });

  test("static file honours gzip", async () => {
    const [gzipped, plain] = await rawRequests(standIn.port, [
      get("/static/bench-50k.js", "Accept-Encoding: gzip, deflate, br\r\n"),
      get("/static/bench-50k.js"),
    ]);
    expect(gzipped!.status).toBe(200);
    expect(header(gzipped!, "content-encoding")).toBe("gzip");
    expect(header(gzipped!, "vary")).toBe("Accept-Encoding");
    expect(Number(header(gzipped!, "content-length"))).toBe(gzipped!.body.length);
    expect(gunzipSync(gzipped!.body).length).toBe(BENCH_STATIC_BYTES);

    expect(plain!.status).toBe(200);
    expect(header(plain!, "content-encoding")).toBeUndefined();
    expect(plain!.body.length).toBe(BENCH_STATIC_BYTES);
    expect(gunzipSync(gzipped!.body).equals(plain!.body)).toBe(true);
  });

  test("static gzip with q=0 is not compressed", async () => {
    const response = await rawRequest(standIn.port, get("/static/app.css", "Accept-Encoding: gzip;q=0\r\n"));
    expect(header(response, "content-encoding")).toBeUndefined();
    expect(header(response, "content-type")).toBe("text/css; charset=utf-8");
  });

  test("static ETag answers 304", async () => {
    const first = await rawRequest(standIn.port, get("/static/main.js", "Accept-Encoding: gzip\r\n"));
    const etag = header(first, "etag");
    expect(etag).toMatch(/^".+"$/);
    const [again, otherEncoding] = await rawRequests(standIn.port, [
      get("/static/main.js", `Accept-Encoding: gzip\r\nIf-None-Match: "nope", ${etag}\r\n`),
      get("/static/main.js", `If-None-Match: ${etag}\r\n`),
    ]);
    expect(again!.status).toBe(304);
    expect(again!.body.length).toBe(0);
    expect(header(again!, "etag")).toBe(etag!);
    expect(otherEncoding!.status).toBe(200);
  });

  test("static directory path is 404", async () => {
    const response = await rawRequest(standIn.port, get("/static/"));
    expect(response.status).toBe(404);
  });

  test("download Range answers 206", async () => {
    const response = await fetch(`${standIn.url}/api/v4/files/abc123?size=100000`, {
      headers: { Range: "bytes=1000-1999" },
    });
    expect(response.status).toBe(206);
    expect(response.headers.get("content-range")).toBe("bytes 1000-1999/100000");
    expect(response.headers.get("accept-ranges")).toBe("bytes");
    const body = Buffer.from(await response.arrayBuffer());
    expect(body.length).toBe(1000);
    expect(body.equals(expectedDownloadBytes(1000, 2000))).toBe(true);
  });

  test("download suffix and open ranges", async () => {
    const [suffix, open, outside] = await rawRequests(standIn.port, [
      get("/api/v4/files/abc?size=5000", "Range: bytes=-100\r\n"),
      get("/api/v4/files/abc?size=5000", "Range: bytes=4990-\r\n"),
      get("/api/v4/files/abc?size=5000", "Range: bytes=5000-\r\n"),
    ]);
    expect(header(suffix!, "content-range")).toBe("bytes 4900-4999/5000");
    expect(suffix!.body.equals(expectedDownloadBytes(4900, 5000))).toBe(true);
    expect(header(open!, "content-range")).toBe("bytes 4990-4999/5000");
    expect(outside!.status).toBe(416);
    expect(header(outside!, "content-range")).toBe("bytes */5000");
  });

  test("download full body and HEAD", async () => {
    const [full, head] = await rawRequests(standIn.port, [
      get("/api/v4/files/abc?size=300000"),
      "HEAD /api/v4/files/abc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ]);
    expect(full!.status).toBe(200);
    expect(full!.body.equals(expectedDownloadBytes(0, 300000))).toBe(true);
    expect(header(full!, "content-disposition")).toBe('attachment; filename="abc.bin"');
    expect(head!.status).toBe(200);
    expect(header(head!, "content-length")).toBe("52428800");
    expect(head!.body.length).toBe(0);
  });

  test("default download streams 50 MiB", async () => {
    const response = await fetch(`${standIn.url}/api/v4/files/big`);
    let bytes = 0;
    for await (const chunk of response.body!) bytes += chunk.length;
    expect(bytes).toBe(52428800);
  });

  test("upload counts and hashes 20 MB", async () => {
    const body = randomBytes(20 * 1024 * 1024);
    const response = await fetch(`${standIn.url}/api/v4/files?channel_id=abc&filename=x.bin`, {
      method: "POST",
      body,
    });
    expect(response.status).toBe(201);
    const result = (await response.json()) as { bytes: number; sha256: string };
    expect(result.bytes).toBe(body.length);
    expect(result.sha256).toBe(createHash("sha256").update(body).digest("hex"));
    expect(lastReceived().bodyBytes).toBe(body.length);
    expect(lastReceived().route).toBe("upload-file");
  });

  test("posts echo the JSON body", async () => {
    const post = JSON.stringify({ channel_id: "abc", message: "hello" });
    const response = await fetch(`${standIn.url}/api/v4/posts`, { method: "POST", body: post });
    expect(response.status).toBe(201);
    expect(await response.text()).toBe(post);
  });

  test("echo returns the request it received", async () => {
    const response = await rawRequest(
      standIn.port,
      "PUT /api/v4/echo?x=%2F HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    const echoed = JSON.parse(response.body.toString());
    expect(echoed.method).toBe("PUT");
    expect(echoed.target).toBe("/api/v4/echo?x=%2F");
    expect(echoed.headers["x-forwarded-for"]).toEqual(["10.0.0.1"]);
    expect(echoed.bodyBytes).toBe(3);
  });

  test("small routes answer as documented", async () => {
    const responses = await rawRequests(standIn.port, [
      get("/api/v4/redirect-me"),
      get("/api/v4/no-content"),
      "DELETE /hooks/abc123 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
      get("/api/v4/config/client?format=old"),
      get("/api/v4/license/client?format=old"),
      "POST /api/v4/notifications/ack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
      get("/login/desktop"),
      get("/login/sso/saml"),
      get("/oauth/gitlab/mobile_login"),
      get("/api/v3/oauth/google/complete"),
      get("/signup/office365/complete"),
      get("/api/v4/users/me/teams"),
      get("/api/v4/channels/abc"),
      get("/api/v4/slow?ms=20"),
      "POST /api/v4/system/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    ]);
    expect(responses.map((response) => response.status)).toEqual([
      302, 204, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 404,
    ]);
    expect(header(responses[0]!, "location")).toBe("/api/v4/users/me");
    const configBytes = responses[3]!.body.length;
    expect(configBytes).toBeGreaterThan(1500);
    expect(configBytes).toBeLessThan(3000);
    expect(responses[13]!.body.toString()).toBe("slow done");
    expect(standIn.received.map((record) => record.route)).toEqual([
      "redirect-me",
      "no-content",
      "hooks",
      "config-client",
      "license-client",
      "notifications-ack",
      "login-desktop",
      "saml-login",
      "openid",
      "oauth-api-v3-complete",
      "oauth-signup-login-complete",
      "users-me-teams",
      "channel",
      "slow",
      null,
    ]);
  });

  test("every response carries request and version ids", async () => {
    const response = await rawRequest(standIn.port, get("/api/v4/system/ping"));
    expect(header(response, "x-request-id")).toMatch(/^[a-z0-9]{26}$/);
    expect(header(response, "x-version-id")).toBeDefined();
  });

  test("upgrade on a plain route is answered", async () => {
    const response = await rawRequest(
      standIn.port,
      get("/api/v4/users/me", "Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    );
    expect(response.status).toBe(200);
    expect(header(response, "connection")).toBe("close");
    expect(lastReceived().route).toBe("users-me");
  });
});

/** Resolves with the next event of `type` on `socket`, or rejects after 5 s. */
function nextEvent<T extends Event>(socket: WebSocket, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} event within 5 s`)), 5000);
    socket.addEventListener(
      type,
      (event) => {
        clearTimeout(timer);
        resolve(event as T);
      },
      { once: true },
    );
  });
}

async function openWebSocket(path: string, protocols?: string[]): Promise<WebSocket> {
  const socket = new WebSocket(`${standIn.url.replace("http:", "ws:")}${path}`, protocols);
  socket.binaryType = "arraybuffer";
  await nextEvent(socket, "open");
  return socket;
}

/** Encodes one masked client frame with FIN set unless `fin` is false. */
function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((byte, index) => byte ^ mask[index & 3]!));
  const first = (fin ? 0x80 : 0) | opcode;
  if (payload.length < 126) return Buffer.concat([Buffer.from([first, 0x80 | payload.length]), mask, masked]);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(payload.length);
  return Buffer.concat([Buffer.from([first, 0x80 | 126]), length, mask, masked]);
}

function handshake(path: string, extraHeaders = ""): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extraHeaders}\r\n`
  );
}

describe("websocket", () => {
  test("echoes text and binary", async () => {
    const socket = await openWebSocket("/api/v4/websocket?connection_id=&sequence_number=0");
    expect(socket.extensions).toBe("");
    socket.send('{"action":"ping","seq":1}');
    const text = await nextEvent<MessageEvent>(socket, "message");
    expect(text.data).toBe('{"action":"ping","seq":1}');

    const binary = randomBytes(70_000);
    socket.send(binary);
    const echoed = await nextEvent<MessageEvent>(socket, "message");
    expect(Buffer.from(echoed.data as ArrayBuffer).equals(binary)).toBe(true);

    socket.close(4000, "client done");
    const closed = await nextEvent<CloseEvent>(socket, "close");
    expect(closed.code).toBe(4000);
    expect(closed.reason).toBe("client done");

    const record = standIn.received.find((entry) => entry.route === "websocket");
    expect(record?.status).toBe(101);
    expect(record?.target).toBe("/api/v4/websocket?connection_id=&sequence_number=0");
  });

  test("close command closes with its code", async () => {
    const socket = await openWebSocket("/api/v4/websocket/");
    socket.send("close:4001:reason");
    const closed = await nextEvent<CloseEvent>(socket, "close");
    expect(closed.code).toBe(4001);
    expect(closed.reason).toBe("reason");
  });

  test("first offered subprotocol is selected", async () => {
    const socket = await openWebSocket("/plugins/focalboard/ws/onchange", ["mm-one", "mm-two"]);
    expect(socket.protocol).toBe("mm-one");
    socket.close();
    await nextEvent(socket, "close");
  });

  test("handshake accept key and no extension", async () => {
    const response = await rawRequest(
      standIn.port,
      handshake("/api/v4/websocket", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
    );
    expect(response.status).toBe(101);
    // The accept value for this key is the worked example in RFC 6455 section 1.3.
    expect(header(response, "sec-websocket-accept")).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    expect(header(response, "sec-websocket-extensions")).toBeUndefined();
  });

  test("origin must match host", async () => {
    const responses = await Promise.all([
      rawRequest(standIn.port, handshake("/api/v4/websocket", "Origin: http://evil.example\r\n")),
      rawRequest(standIn.port, handshake("/api/v4/websocket", "Origin: https://127.0.0.1\r\n")),
      rawRequest(standIn.port, handshake("/api/v4/websocket", "Origin: http://127.0.0.1:1\r\n")),
      rawRequest(standIn.port, handshake("/api/v4/websocket", "Origin: null\r\n")),
    ]);
    expect(responses.map((response) => response.status)).toEqual([403, 101, 403, 403]);
    const rejected = standIn.received.filter((record) => record.status === 403);
    expect(rejected).toHaveLength(3);
    expect(rejected.every((record) => record.route === "websocket")).toBe(true);
  });

  test("Bun client with foreign Origin is rejected", async () => {
    const socket = new WebSocket(`${standIn.url.replace("http:", "ws:")}/api/v4/websocket`, {
      headers: { Origin: "https://evil.example" },
    });
    const closed = await nextEvent<CloseEvent>(socket, "close");
    expect(closed.wasClean).toBe(false);
    expect(lastReceived().status).toBe(403);
  });

  test("token list in Connection is accepted", async () => {
    const request = handshake("/api/v4/websocket").replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
    const response = await rawRequest(standIn.port, request);
    expect(response.status).toBe(101);
  });

  test("upgrade to an unclean path is redirected", async () => {
    const response = await rawRequest(standIn.port, handshake("/static/../api/v4/websocket"));
    expect(response.status).toBe(301);
    expect(header(response, "location")).toBe("/api/v4/websocket");
    expect(header(response, "connection")).toBe("close");
    expect(lastReceived().route).toBe("redirect");
  });

  test("plain GET on the websocket route is 400", async () => {
    const response = await rawRequest(standIn.port, get("/api/v4/websocket"));
    expect(response.status).toBe(400);
    expect(lastReceived().route).toBe("websocket");
  });

  test("raw frames: ping, fragments, close echo", async () => {
    const socket = net.connect(standIn.port, "127.0.0.1");
    let received: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
    });
    const ended = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));

    const close = Buffer.alloc(5);
    close.writeUInt16BE(1000);
    close.write("bye", 2);
    socket.write(
      Buffer.concat([
        Buffer.from(handshake("/api/v4/websocket")),
        clientFrame(0x9, Buffer.from("p")),
        clientFrame(0x1, Buffer.from("hel"), false),
        clientFrame(0x9, Buffer.from("q")),
        clientFrame(0x0, Buffer.from("lo"), true),
        clientFrame(0x8, close),
      ]),
    );
    await ended;

    const frames = received.subarray(received.indexOf("\r\n\r\n") + 4);
    const expected = Buffer.concat([
      Buffer.from([0x8a, 1]),
      Buffer.from("p"),
      Buffer.from([0x8a, 1]),
      Buffer.from("q"),
      Buffer.from([0x81, 5]),
      Buffer.from("hello"),
      Buffer.from([0x88, 5]),
      close,
    ]);
    expect(frames.toString("hex")).toBe(expected.toString("hex"));
  });

  test("unmasked frame fails with 1002", async () => {
    const socket = net.connect(standIn.port, "127.0.0.1");
    let received: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
    });
    const ended = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.write(Buffer.concat([Buffer.from(handshake("/api/v4/websocket")), Buffer.from([0x81, 0x02, 0x68, 0x69])]));
    await ended;
    const frames = received.subarray(received.indexOf("\r\n\r\n") + 4);
    expect(frames[0]).toBe(0x88);
    expect(frames.readUInt16BE(2)).toBe(1002);
  });
});

describe("lifecycle", () => {
  test("clear empties the log in place", async () => {
    const log = standIn.received;
    await rawRequest(standIn.port, get("/api/v4/system/ping"));
    expect(log).toHaveLength(1);
    standIn.clear();
    expect(log).toHaveLength(0);
    expect(standIn.received).toBe(log);
  });

  test("close ends open connections", async () => {
    const second = await startStandInMattermost({ quiet: true });
    const socket = new WebSocket(`${second.url.replace("http:", "ws:")}/api/v4/websocket`);
    await nextEvent(socket, "open");
    const socketClosed = nextEvent(socket, "close");
    const pending = fetch(`${second.url}/api/v4/slow?ms=60000`).catch((error: unknown) => error);
    await Bun.sleep(50);
    const started = Date.now();
    await second.close();
    await socketClosed;
    expect(await pending).toBeInstanceOf(Error);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
