// WebSocket upgrades through the compiled gate to the stand-in Mattermost's echo route.
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { startStandInMattermost, type StandInMattermost } from "./support/stand-in-mattermost.ts";
import { connect, createServer } from "node:net";
import { SECRET_HEADER, TEST_SECRET, freePort, startGateProcess, type GateProcess } from "./support/gate-process.ts";

let mattermost: StandInMattermost;
let gate: GateProcess;
let exemptGate: GateProcess;

beforeAll(async () => {
  mattermost = await startStandInMattermost({ quiet: true });
  gate = await startGateProcess({ upstream: mattermost.url });
  exemptGate = await startGateProcess({ upstream: mattermost.url, args: ["--allow", "websocket"] });
});
afterAll(async () => {
  await gate?.stop();
  await exemptGate?.stop();
  await mattermost?.close();
});
beforeEach(() => mattermost.clear());

interface Connection {
  socket: WebSocket;
  messages: (string | Uint8Array)[];
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens a WebSocket with Bun's client; resolves once open, or rejects with the close code. */
function open(url: string, headers: Record<string, string>, protocols: string[] = []): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers, protocols } as unknown as string[]);
    socket.binaryType = "arraybuffer";
    const messages: (string | Uint8Array)[] = [];
    socket.addEventListener("message", (event) =>
      messages.push(typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer)),
    );
    const closed = new Promise<{ code: number; reason: string }>((resolveClose) =>
      socket.addEventListener("close", (event) => resolveClose({ code: event.code, reason: event.reason })),
    );
    socket.addEventListener("open", () => resolve({ socket, messages, closed }));
    socket.addEventListener("error", () => reject(new Error("websocket error")));
    closed.then((event) => reject(new Error(`closed with ${event.code}`)));
  });
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}

function wsUrl(base: string, path: string): string {
  return base.replace(/^http/, "ws") + path;
}

const sameOrigin = (port: number) => ({ host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}` });

describe("websocket", () => {
  test("echo through the gate with the secret", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket?connection_id=&sequence_number=0"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
      cookie: "MMAUTHTOKEN=abc",
      authorization: "Bearer tok",
    });
    connection.socket.send('{"action":"user_typing","seq":1}');
    const binary = new Uint8Array([0x81, 0xa3, 0x00, 0xff, 0x10]);
    connection.socket.send(binary);
    await waitFor(() => connection.messages.length === 2);
    expect(connection.messages[0]).toBe('{"action":"user_typing","seq":1}');
    expect(Array.from(connection.messages[1] as Uint8Array)).toEqual(Array.from(binary));

    const upgrade = mattermost.received.find((request) => request.route === "websocket")!;
    expect(upgrade.target).toBe("/api/v4/websocket?connection_id=&sequence_number=0");
    expect(upgrade.headers.host).toEqual([`127.0.0.1:${gate.port}`]);
    expect(upgrade.headers.origin).toEqual([`http://127.0.0.1:${gate.port}`]);
    expect(upgrade.headers.cookie).toEqual(["MMAUTHTOKEN=abc"]);
    expect(upgrade.headers.authorization).toEqual(["Bearer tok"]);
    expect(upgrade.headers["x-mattermost-preauth-secret"]).toBeUndefined();
    expect(upgrade.headers["x-forwarded-for"]).toEqual(["127.0.0.1"]);
    connection.socket.close(1000, "bye");
    expect((await connection.closed).code).toBe(1000);
  });

  test("upgrade without the secret is rejected with 403", async () => {
    const response = await fetch(`${gate.url}/api/v4/websocket`, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    expect(response.status).toBe(403);
    expect(response.headers.get("x-reject-reason")).toBe("pre-auth");
    expect(mattermost.received).toHaveLength(0);
  });

  test("plugin websocket route is bridged", async () => {
    const connection = await open(wsUrl(gate.url, "/plugins/focalboard/ws/onchange"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    connection.socket.send("ping-plugin");
    await waitFor(() => connection.messages.length === 1);
    expect(connection.messages[0]).toBe("ping-plugin");
    connection.socket.close();
  });

  test("subprotocol chosen upstream reaches the client", async () => {
    const connection = await open(
      wsUrl(gate.url, "/api/v4/websocket"),
      { ...sameOrigin(gate.port), [SECRET_HEADER]: TEST_SECRET },
      ["mm.v1", "mm.v2"],
    );
    expect(connection.socket.protocol).toBe("mm.v1");
    const upgrade = mattermost.received.find((request) => request.route === "websocket")!;
    expect(upgrade.headers["sec-websocket-protocol"]).toEqual(["mm.v1, mm.v2"]);
    connection.socket.close();
  });

  test("upstream close code reaches the client", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    connection.socket.send("close:4001:session expired");
    const closed = await connection.closed;
    expect(closed.code).toBe(4001);
    expect(closed.reason).toBe("session expired");
  });

  test("client close code reaches upstream", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    connection.socket.close(4002, "client leaving");
    // The stand-in echoes the close frame it receives, so the code makes the round trip.
    const closed = await connection.closed;
    expect(closed.code).toBe(4002);
  });

  test("cross-origin upgrade refused upstream is refused by the gate", async () => {
    await expect(
      open(wsUrl(gate.url, "/api/v4/websocket"), {
        host: `127.0.0.1:${gate.port}`,
        origin: "https://evil.example",
        [SECRET_HEADER]: TEST_SECRET,
      }),
    ).rejects.toThrow();
    const upgrades = mattermost.received.filter((request) => request.route === "websocket");
    expect(upgrades.map((request) => request.status)).toEqual([403]);
  });

  test("websocket exemption lets the upgrade through without the secret", async () => {
    const connection = await open(wsUrl(exemptGate.url, "/api/v4/websocket/"), sameOrigin(exemptGate.port));
    connection.socket.send("hello");
    await waitFor(() => connection.messages.length === 1);
    expect(connection.messages[0]).toBe("hello");
    connection.socket.close();
    expect(exemptGate.output()).toContain("upgrade to /api/v4/websocket exempt from the secret");
  });

  test("exempt upgrade with an invalid handshake never reaches upstream", async () => {
    const handshakes: Record<string, string>[] = [
      { upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
      { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13" },
      { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "8", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
    ];
    for (const headers of handshakes) {
      const response = await fetch(`${exemptGate.url}/api/v4/websocket`, { headers });
      expect(response.status).toBe(400);
    }
    expect(mattermost.received).toHaveLength(0);
  });

  test("websocket exemption covers only the upgrade", async () => {
    const plain = await fetch(`${exemptGate.url}/api/v4/websocket`);
    expect(plain.status).toBe(403);
    await expect(open(wsUrl(exemptGate.url, "/plugins/focalboard/ws/onchange"), sameOrigin(exemptGate.port))).rejects.toThrow();
  });

  test("many messages keep their order", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    for (let index = 0; index < 500; index++) connection.socket.send(`m${index}`);
    await waitFor(() => connection.messages.length === 500);
    expect(connection.messages.every((message, index) => message === `m${index}`)).toBe(true);
    connection.socket.close();
  });

  test("message larger than 16 MiB passes both ways", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    const size = 20 * 1024 * 1024;
    const message = new Uint8Array(size);
    for (let index = 0; index < size; index += 4096) message[index] = index % 251;
    connection.socket.send(message);
    await waitFor(() => connection.messages.length === 1, 30_000);
    const echoed = connection.messages[0] as Uint8Array;
    expect(echoed.byteLength).toBe(size);
    expect(Buffer.from(echoed).equals(Buffer.from(message))).toBe(true);
    connection.socket.close();
  }, 60_000);

  test("upgrade reaches upstream without the secret and with forwarding headers", async () => {
    const connection = await open(wsUrl(gate.url, "/api/v4/websocket?connection_id=abc"), {
      ...sameOrigin(gate.port),
      [SECRET_HEADER]: TEST_SECRET,
    });
    connection.socket.close();
    const upgrade = mattermost.received.find((request) => request.route === "websocket")!;
    expect(upgrade.target).toBe("/api/v4/websocket?connection_id=abc");
    expect(upgrade.headers[SECRET_HEADER]).toBeUndefined();
    expect(upgrade.headers["x-forwarded-for"]).toEqual(["127.0.0.1"]);
    expect(upgrade.headers["origin"]).toEqual([`http://127.0.0.1:${gate.port}`]);
  });

  test("upstream refusal status reaches the client", async () => {
    const response = await new Promise<string>((resolve, reject) => {
      const socket = connect(gate.port, "127.0.0.1", () =>
        socket.write(
          `GET /api/v4/websocket HTTP/1.1\r\nHost: 127.0.0.1:${gate.port}\r\nOrigin: https://evil.example\r\n` +
            `${SECRET_HEADER}: ${TEST_SECRET}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
      );
      let data = "";
      socket.on("data", (chunk) => {
        data += chunk.toString("latin1");
        if (data.includes("\r\n")) {
          socket.destroy();
          resolve(data.split("\r\n")[0]!);
        }
      });
      socket.on("error", reject);
    });
    expect(response).toBe("HTTP/1.1 403 Forbidden");
  });

  test("unreachable upstream gives 502 to the upgrade", async () => {
    const deadGate = await startGateProcess({ upstream: `http://127.0.0.1:${await freePort()}` });
    try {
      await expect(
        open(wsUrl(deadGate.url, "/api/v4/websocket"), { ...sameOrigin(deadGate.port), [SECRET_HEADER]: TEST_SECRET }),
      ).rejects.toThrow();
      expect(deadGate.output()).toContain("upstream WebSocket connection failed");
    } finally {
      await deadGate.stop();
    }
  });
});

describe("websocket tunnel", () => {
  /** Writes `bytes` on one connection and collects what comes back until it closes or 3 s pass. */
  function exchange(port: number, bytes: string): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1", () => socket.write(bytes));
      let data = "";
      socket.setEncoding("latin1");
      socket.on("data", (chunk) => (data += chunk));
      const timer = setTimeout(() => socket.destroy(), 3000);
      socket.on("close", () => {
        clearTimeout(timer);
        resolve(data);
      });
      socket.on("error", () => undefined);
    });
  }

  const upgradeHead = (port: number, origin: string) =>
    `GET /api/v4/websocket HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: ${origin}\r\nConnection: Upgrade\r\n` +
    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  const smuggled = "GET /api/v4/users/me HTTP/1.1\r\nHost: mm.test\r\n\r\n";

  test("refused upgrade on a kept-alive upstream connection carries nothing more", async () => {
    // Like Go's net/http, this upstream responds to a rejected upgrade and keeps the connection
    // open for the next request, so anything sent after the handshake would be served.
    const requestLines: string[] = [];
    const upstream = createServer((connection) => {
      let buffered = "";
      connection.on("data", (chunk) => {
        buffered += chunk.toString("latin1");
        let end = buffered.indexOf("\r\n\r\n");
        while (end >= 0) {
          requestLines.push(buffered.slice(0, buffered.indexOf("\r\n")));
          buffered = buffered.slice(end + 4);
          const status = requestLines.length === 1 ? "403 Forbidden" : "200 OK";
          connection.write(`HTTP/1.1 ${status}\r\nContent-Length: 2\r\n\r\nno`);
          end = buffered.indexOf("\r\n\r\n");
        }
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const upstreamPort = (upstream.address() as { port: number }).port;
    const keptAliveGate = await startGateProcess({ upstream: `http://127.0.0.1:${upstreamPort}`, args: ["--allow", "websocket"] });
    try {
      const reply = await exchange(keptAliveGate.port, upgradeHead(keptAliveGate.port, "https://evil.example") + smuggled);
      expect(reply.startsWith("HTTP/1.1 403 ")).toBe(true);
      await Bun.sleep(200);
      expect(requestLines).toEqual(["GET /api/v4/websocket HTTP/1.1"]);
    } finally {
      await keptAliveGate.stop();
      upstream.close();
    }
  });

  test("refused exempt upgrade cannot carry a request to Mattermost", async () => {
    const reply = await exchange(exemptGate.port, upgradeHead(exemptGate.port, "https://evil.example") + smuggled);
    expect(reply.startsWith("HTTP/1.1 403 ")).toBe(true);
    expect(reply).not.toContain('"username"');
    await Bun.sleep(200);
    expect(mattermost.received.map((request) => request.path)).toEqual(["/api/v4/websocket"]);
  });

  test("bytes sent before the 101 are not read as HTTP by Mattermost", async () => {
    const reply = await exchange(exemptGate.port, upgradeHead(exemptGate.port, `http://127.0.0.1:${exemptGate.port}`) + smuggled);
    expect(reply.startsWith("HTTP/1.1 101 ")).toBe(true);
    await Bun.sleep(200);
    expect(mattermost.received.map((request) => request.path)).toEqual(["/api/v4/websocket"]);
  });
});
