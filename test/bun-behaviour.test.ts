// Pins the behaviour of Bun that the gate relies on, so that a Bun upgrade that changes
// it fails here first. Each test names the gate code that depends on it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer, connect, type AddressInfo, type Server as NetServer } from "node:net";
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

/** Starts a node:http server on a free loopback port. */
async function startNodeServer(handler: RequestListener): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

describe("node:http req.url", () => {
  let server: HttpServer;
  let port = 0;
  beforeAll(async () => {
    ({ server, port } = await startNodeServer((req, res) => res.end(req.url)));
  });
  afterAll(() => server.close());

  // target.ts relies on getting the raw target: the gate matches exactly what was sent.
  const targets = [
    "/static/../api/v4/users/me",
    "/static/%2e%2e/api/v4/users/me",
    "/static/./app.js",
    "/static\\..\\api/v4/users/me",
    "/static//../x",
    "//api/v4/users/me",
    "/static/a%00b;c",
    "/api/v4/config/client#x",
    "/a?x=/static/&y='",
    "http://elsewhere.test/api/v4/users/me?q",
  ];
  for (const target of targets) {
    test(`req.url of ${target} is the raw target`, async () => {
      const response = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n`);
      const body = response.slice(response.indexOf("\r\n\r\n") + 4);
      expect(body).toBe(target);
    });
  }

  test("asterisk-form target is refused before the handler", async () => {
    const response = await rawRequest(port, "OPTIONS * HTTP/1.1\r\nHost: gate.test\r\nConnection: close\r\n\r\n");
    expect(response.startsWith("HTTP/1.1 400 Bad Request")).toBe(true);
  });
});

describe("node:http headers", () => {
  let server: HttpServer;
  let port = 0;
  beforeAll(async () => {
    ({ server, port } = await startNodeServer((req, res) => {
      const body = JSON.stringify(req.rawHeaders);
      res.writeHead(200, ["x-reject-reason", "pre-auth", "X-Mixed-Case", "1", "set-cookie", "a=1", "set-cookie", "b=2"]);
      res.end(body);
    }));
  });
  afterAll(() => server.close());

  test("repeated request header stays in rawHeaders", async () => {
    // headers.ts joins these with ", ", and secrets.ts reports "duplicated" from that.
    const response = await rawRequest(
      port,
      "GET / HTTP/1.1\r\nHost: h\r\nX-Mattermost-Preauth-Secret: one\r\nX-Mattermost-Preauth-Secret: two\r\nConnection: close\r\n\r\n",
    );
    const body = response.slice(response.indexOf("["), response.lastIndexOf("]") + 1);
    expect(JSON.parse(body)).toEqual(["Host", "h", "X-Mattermost-Preauth-Secret", "one", "X-Mattermost-Preauth-Secret", "two", "Connection", "close"]);
  });

  test("writeHead array keeps header names as given", async () => {
    // Mobile 2.34 to 2.39 find x-reject-reason only in lower case.
    const response = await rawRequest(port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect(response).toContain("\r\nx-reject-reason: pre-auth\r\n");
    expect(response).toContain("\r\nX-Mixed-Case: 1\r\n");
  });

  test("writeHead array keeps Set-Cookie lines separate", async () => {
    const response = await rawRequest(port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect(response).toContain("\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n");
  });

  test("no Content-Type is added", async () => {
    const response = await rawRequest(port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect(response.slice(0, response.indexOf("\r\n\r\n")).toLowerCase()).not.toContain("content-type");
  });
});

describe("node:http streamed response bodies", () => {
  test("Content-Length of a streamed body is kept", async () => {
    // proxy.ts streams every response body and relies on this to keep Content-Length.
    const size = 1024 * 1024;
    const { server, port } = await startNodeServer(async (req, res) => {
      res.writeHead(200, ["content-length", String(size)]);
      for (let sent = 0; sent < size; sent += 64 * 1024) {
        await Bun.sleep(1);
        if (!res.write(new Uint8Array(64 * 1024))) await new Promise((resolve) => res.once("drain", resolve));
      }
      res.end();
    });
    try {
      const response = await rawRequest(port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
      const head = response.slice(0, response.indexOf("\r\n\r\n")).toLowerCase();
      expect(head).toContain(`content-length: ${size}`);
      expect(head).not.toContain("transfer-encoding");
      expect(response.length - head.length - 4).toBe(size);
    } finally {
      server.close();
    }
  });
});

describe("node:http keep-alive", () => {
  test("keepAliveTimeout closes an idle connection", async () => {
    // server.ts sets keepAliveTimeout from --idle-timeout.
    const { server, port } = await startNodeServer((req, res) => res.end("ok"));
    server.keepAliveTimeout = 500;
    try {
      const started = performance.now();
      const closedAfter = await new Promise<number>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        socket.on("data", () => {});
        socket.on("close", () => resolve(performance.now() - started));
        socket.on("error", reject);
        setTimeout(() => socket.destroy(), 5_000);
      });
      expect(closedAfter).toBeGreaterThan(400);
      expect(closedAfter).toBeLessThan(3_000);
    } finally {
      server.close();
    }
  });
});

describe("node:http Expect: 100-continue", () => {
  test("checkContinue handler decides whether 100 Continue is sent", async () => {
    // server.ts sends 100 Continue only after the gate let the request through.
    const server = createHttpServer();
    server.on("checkContinue", (req, res) => {
      if (req.url === "/continue") res.writeContinue();
      res.writeHead(req.url === "/continue" ? 200 : 403, ["content-length", "0"]);
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const head = (target: string) =>
        `POST ${target} HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\n`;
      const refused = await rawRequest(port, head("/refuse"));
      expect(refused.startsWith("HTTP/1.1 403")).toBe(true);
      expect(refused).not.toContain("100 Continue");
      const accepted = await rawRequest(port, head("/continue"));
      expect(accepted.startsWith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")).toBe(true);
    } finally {
      server.close();
    }
  });
});

describe("node:https certificate reload", () => {
  test("https.Server has no setSecureContext", () => {
    // server.ts replaces the listener on a certificate change because of this. When a
    // Bun release adds the method, this test fails and the reload can use it instead.
    const server = createHttpsServer({});
    expect(typeof (server as unknown as { setSecureContext?: unknown }).setSecureContext).toBe("undefined");
  });

  test("second listener on the same port fails with EADDRINUSE", async () => {
    // A second gate on the same address must fail to start, and a listener replaced
    // after a certificate change must be able to bind once the old one has closed.
    const { server, port } = await startNodeServer((req, res) => res.end());
    const second = createHttpServer();
    const failure = await new Promise<string>((resolve) => {
      second.once("error", (error: NodeJS.ErrnoException) => resolve(String(error.code)));
      second.listen({ port, host: "127.0.0.1", reusePort: true }, () => resolve("listening"));
    });
    expect(failure).toBe("EADDRINUSE");
    server.close();
    const third = createHttpServer();
    await new Promise<void>((resolve) => third.listen(port, "127.0.0.1", resolve));
    third.close();
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

  // isForwardable predicts these with new URL(); the gate refuses such paths with 400.
  const rewrittenPaths: [string, string][] = [
    ["/static/../api/v4/users/me", "/api/v4/users/me"],
    ["/static/./app.js", "/static/app.js"],
    ["/static\\app.js", "/static/app.js"],
    ["/a{b}^`c", "/a%7Bb%7D%5E%60c"],
    ["/a\"b", "/a%22b"],
  ];
  for (const [path, sent] of rewrittenPaths) {
    test(`path ${path} is sent as ${sent}`, async () => {
      const { head } = await fetchUpstream(path);
      expect(head.startsWith(`GET ${sent} HTTP/1.1`)).toBe(true);
    });
  }

  test("query is only percent-encoded", async () => {
    // isForwardable leaves the query unchecked because of this.
    const { head } = await fetchUpstream("/a?x='y\"&z=/../b\\c");
    expect(head.startsWith("GET /a?x=%27y%22&z=/../b\\c HTTP/1.1")).toBe(true);
  });
});
