// Pins the behaviour of Bun that the gate relies on, so that a Bun upgrade that changes
// it fails here first. Each test names the gate code that depends on it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, connect, type Server as NetServer } from "node:net";
import { gzipSync } from "node:zlib";

/** Sends one raw HTTP/1.1 request and returns the whole raw response. */
function rawRequest(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(head));
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk) => (data += chunk));
    socket.on("end", () => resolve(data));
    socket.on("error", reject);
  });
}

describe("Bun.serve request.url", () => {
  let server: ReturnType<typeof Bun.serve>;
  beforeAll(() => {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (request) => new Response(request.url),
    });
  });
  afterAll(() => server.stop(true));

  const cases: [string, string][] = [
    // target.ts relies on these: dot segments and "\" never reach the gate's matcher.
    ["/static/../api/v4/users/me", "/api/v4/users/me"],
    ["/static/%2e%2e/api/v4/users/me", "/api/v4/users/me"],
    ["/static/.%2E/api", "/api"],
    ["/static/./app.js", "/static/app.js"],
    ["/static\\..\\api/v4/users/me", "/api/v4/users/me"],
    // These stay as they are, so the whitelist must reject them itself.
    ["/static/..%2fapi/v4/users/me", "/static/..%2fapi/v4/users/me"],
    ["//api/v4/users/me", "//api/v4/users/me"],
    ["/static/a%00b", "/static/a%00b"],
    ["/static/a;b", "/static/a;b"],
    ["/static/a%5cb", "/static/a%5cb"],
    // A raw "#" is kept in request.url, which is why parseRequestUrl rejects it.
    ["/api/v4/config/client#x", "/api/v4/config/client#x"],
    ["/a?x=/static/", "/a?x=/static/"],
  ];
  for (const [target, expected] of cases) {
    test(`request.url path of ${target}`, async () => {
      const response = await rawRequest(server.port!, `GET ${target} HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n`);
      const body = response.slice(response.indexOf("\r\n\r\n") + 4);
      expect(body).toBe(`http://gate.test${expected}`);
    });
  }

  test("absolute-form target keeps only its path", async () => {
    const response = await rawRequest(
      server.port!,
      "GET http://elsewhere.test/api/v4/users/me HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n",
    );
    expect(response.endsWith("http://gate.test/api/v4/users/me")).toBe(true);
  });

  test("invalid Host header is refused before the handler", async () => {
    const response = await rawRequest(server.port!, "GET /x HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n");
    const body = response.slice(response.indexOf("\r\n\r\n") + 4);
    // parseRequestUrl finds the path after "://host"; a "/" in the host would break that.
    expect(body.startsWith("http://a/b")).toBe(false);
  });
});

describe("Bun.serve headers", () => {
  let server: ReturnType<typeof Bun.serve>;
  beforeAll(() => {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (request) =>
        new Response(String(request.headers.get("x-mattermost-preauth-secret")), {
          headers: { "x-reject-reason": "pre-auth" },
        }),
    });
  });
  afterAll(() => server.stop(true));

  test("repeated request header is joined with a comma and space", async () => {
    // secrets.ts reports "duplicated" from this spelling.
    const response = await rawRequest(
      server.port!,
      "GET / HTTP/1.1\r\nHost: h\r\nX-Mattermost-Preauth-Secret: one\r\nX-Mattermost-Preauth-Secret: two\r\nConnection: close\r\n\r\n",
    );
    expect(response.endsWith("one, two")).toBe(true);
  });

  test("custom response header name stays lower case on the wire", async () => {
    // Mobile 2.34 to 2.39 find x-reject-reason only in lower case.
    const response = await rawRequest(server.port!, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect(response).toContain("\r\nx-reject-reason: pre-auth\r\n");
  });
});

describe("Bun fetch as the upstream client", () => {
  let upstream: NetServer;
  let port = 0;
  const heads: string[] = [];
  const gzipped = gzipSync("compressed body");
  beforeAll(async () => {
    upstream = createServer((socket) => {
      let data = "";
      socket.on("data", (chunk) => {
        data += chunk.toString("latin1");
        if (!data.includes("\r\n\r\n")) return;
        heads.push(data.slice(0, data.indexOf("\r\n\r\n")));
        socket.write(
          "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Encoding: gzip\r\n" +
            `Set-Cookie: MMAUTHTOKEN=a; Path=/\r\nSet-Cookie: MMUSERID=b; Path=/\r\nContent-Length: ${gzipped.length}\r\nConnection: close\r\n\r\n`,
        );
        socket.end(gzipped);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    port = (upstream.address() as { port: number }).port;
  });
  afterAll(() => upstream.close());

  async function fetchUpstream(path: string, headers: Record<string, string> = {}) {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      headers,
      redirect: "manual",
      decompress: false,
    } as RequestInit);
    return { response, body: new Uint8Array(await response.arrayBuffer()), head: heads.at(-1) ?? "" };
  }

  test("decompress false passes the encoded body through", async () => {
    const { response, body } = await fetchUpstream("/static/app.js", { "accept-encoding": "gzip" });
    expect(response.headers.get("content-encoding")).toBe("gzip");
    expect(Buffer.from(body).equals(gzipped)).toBe(true);
  });

  test("redirect manual returns the redirect", async () => {
    const { response } = await fetchUpstream("/x");
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBe("/elsewhere");
  });

  test("Set-Cookie lines stay separate", async () => {
    const { response } = await fetchUpstream("/x");
    expect(response.headers.getSetCookie()).toEqual(["MMAUTHTOKEN=a; Path=/", "MMUSERID=b; Path=/"]);
  });

  test("Host and Origin are sent as given", async () => {
    const { head } = await fetchUpstream("/x", { host: "mm.example.com", origin: "https://mm.example.com" });
    expect(head).toContain("\r\nHost: mm.example.com");
    expect(head).toContain("\r\nOrigin: https://mm.example.com");
  });

  test("no Accept-Encoding is added when the client sent none", async () => {
    const { head } = await fetchUpstream("/x");
    expect(head.toLowerCase()).not.toContain("accept-encoding");
  });

  test("encoded separators in the path are sent unchanged", async () => {
    const { head } = await fetchUpstream("/api/v4/files/a%2fb%5cc%00;d");
    expect(head.startsWith("GET /api/v4/files/a%2fb%5cc%00;d HTTP/1.1")).toBe(true);
  });

  test("leading double slash is collapsed", async () => {
    // target.ts isForwardable refuses such paths because of this.
    const { head } = await fetchUpstream("//api/v4/users/me");
    expect(head.startsWith("GET /api/v4/users/me HTTP/1.1")).toBe(true);
  });
});

describe("Bun.serve streamed response bodies", () => {
  test("Content-Length of a streamed body is replaced by chunked framing", async () => {
    // proxy.ts buffers bodies up to BUFFERED_RESPONSE_LIMIT because of this. When a Bun
    // release keeps the header, this test fails and the buffering can go.
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch() {
        let sent = 0;
        const stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            await Bun.sleep(1);
            controller.enqueue(new Uint8Array(64 * 1024));
            sent += 64 * 1024;
            if (sent >= 1024 * 1024) controller.close();
          },
        });
        return new Response(stream, { headers: { "content-length": String(1024 * 1024) } });
      },
    });
    try {
      const response = await rawRequest(server.port!, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
      const head = response.slice(0, response.indexOf("\r\n\r\n")).toLowerCase();
      expect(head).toContain("transfer-encoding: chunked");
      expect(head).not.toContain("content-length");
    } finally {
      server.stop(true);
    }
  });
});
