// Pins the behaviour of Bun that the gate relies on, so that a Bun upgrade that changes
// it fails here first. Each test names the gate code that depends on it. Every socket
// test runs over real connections on 127.0.0.1, and every wait is bounded by
// EVENT_TIMEOUT_MS.
//
// The gate speaks HTTP/1.1 itself: Bun.listen accepts the clients (src/server.ts,
// src/client.ts), Bun.connect reaches Mattermost (src/upstream.ts), and src/wire.ts
// queues what socket.write() does not take. Only the admin listener (src/admin.ts)
// still uses Bun.serve and fetch().
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, SocketHandler, TCPSocketListener, TCPSocketListenOptions } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, createSecureContext } from "node:tls";
import { makeCertificate } from "./support/certificates.ts";

const HOST = "127.0.0.1";
/** Maximum wait for one event, in milliseconds. bun test gives each test 5 s in all. */
const EVENT_TIMEOUT_MS = 3_000;
/** Time to watch for an event that must not happen, in milliseconds. */
const QUIET_MS = 200;

type Handler = SocketHandler<undefined>;

interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

interface ListenOptions {
  readonly allowHalfOpen?: boolean;
  readonly exclusive?: boolean;
  readonly tls?: TlsFiles;
}

interface ConnectOptions {
  readonly allowHalfOpen?: boolean;
  readonly tls?: { readonly serverName?: string; readonly ca?: string };
}

interface Loopback {
  readonly listener: TCPSocketListener<undefined>;
  readonly port: number;
  /** Resolves with the first connection the listener accepts. */
  accepted(): Promise<Socket<undefined>>;
}

const listeners: TCPSocketListener<undefined>[] = [];
const sockets: Socket<undefined>[] = [];

afterEach(() => {
  for (const socket of sockets.splice(0)) socket.terminate();
  for (const listener of listeners.splice(0)) listener.stop(true);
});

/** Resolves with `promise`, or rejects when `event` has not happened within `ms`. */
async function within<T>(promise: Promise<T>, event: string, ms = EVENT_TIMEOUT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${event}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 10 ms until it holds, or rejects after `ms`. */
async function until(condition: () => boolean, event: string, ms = EVENT_TIMEOUT_MS): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${event}`);
    await Bun.sleep(10);
  }
}

/** Starts a listener on a free loopback port, which the afterEach hook stops. */
function listenLoopback(handler: Handler, options: ListenOptions = {}): Loopback {
  const accepted = Promise.withResolvers<Socket<undefined>>();
  const listener = Bun.listen<undefined>({
    hostname: HOST,
    port: 0,
    ...options,
    socket: {
      data() {},
      ...handler,
      open(socket) {
        sockets.push(socket);
        handler.open?.(socket);
        accepted.resolve(socket);
      },
    },
  });
  listeners.push(listener);
  return { listener, port: listener.port, accepted: () => within(accepted.promise, "an accepted connection") };
}

/** Connects to a loopback port. The afterEach hook closes the socket. */
async function connectLoopback(port: number, handler: Handler, options: ConnectOptions = {}): Promise<Socket<undefined>> {
  const socket = await within(
    Bun.connect<undefined>({ hostname: HOST, port, ...options, socket: { data() {}, ...handler } }),
    "Bun.connect",
  );
  sockets.push(socket);
  return socket;
}

/** Returns `size` bytes that number their own 4-byte words, so a lost or moved byte shows. */
function numberedBytes(size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let offset = 0; offset + 4 <= size; offset += 4) bytes.writeUInt32BE(offset / 4, offset);
  return bytes;
}

/** Resolves the current waiter on each drain event. A drain with no waiter is dropped. */
class DrainSignal {
  private waiter: PromiseWithResolvers<void> | null = null;

  fire(): void {
    this.waiter?.resolve();
    this.waiter = null;
  }

  /** Waits for the next drain event. Call it synchronously after the short write. */
  next(): Promise<void> {
    this.waiter = Promise.withResolvers<void>();
    return within(this.waiter.promise, "a drain event");
  }
}

/** Writes all of `payload` the way src/wire.ts does: the rest of a short write waits for drain. */
async function writeAll(socket: Socket<undefined>, payload: Buffer, drains: DrainSignal): Promise<void> {
  let offset = 0;
  while (offset < payload.length) {
    const written = socket.write(payload.subarray(offset));
    if (written < 0) throw new Error(`write() returned ${written} on an open socket`);
    offset += written;
    if (offset < payload.length) await drains.next();
  }
}

/** Collects what a socket receives, keeping every chunk the data handler gets. */
class Received {
  readonly chunks: Buffer[] = [];
  bytes = 0;

  add(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  all(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.all().toString("latin1");
  }
}

/** Returns the `code` of the error that `action` throws, or "no error". */
function thrownCode(action: () => unknown): string {
  try {
    action();
    return "no error";
  } catch (error) {
    return String((error as { code?: unknown }).code);
  }
}

describe("socket.write", () => {
  test("write returns the bytes the kernel took", async () => {
    // src/wire.ts write() queues data.subarray(written) and sends it from the drain
    // handler, so Bun must report exactly what it took, send nothing more, and call drain.
    const payload = numberedBytes(32 * 1024 * 1024);
    const drains = new DrainSignal();
    const server = listenLoopback({ drain: () => drains.fire() });
    const received = new Received();
    const client = await connectLoopback(server.port, { data: (_, chunk) => received.add(chunk) });
    client.pause();
    const socket = await server.accepted();

    const first = socket.write(payload);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(payload.length);

    const drained = drains.next();
    client.resume();
    await drained;
    await until(() => received.bytes >= first, "the bytes of the first write");
    await Bun.sleep(QUIET_MS);
    expect(received.bytes).toBe(first);

    await writeAll(socket, payload.subarray(first), drains);
    await until(() => received.bytes >= payload.length, "the whole payload");
    expect(received.bytes).toBe(payload.length);
    expect(received.all().equals(payload)).toBe(true);
  });

  test("write after terminate does not throw", async () => {
    // src/wire.ts write() and flush() treat a negative count as a closed socket. Bun 1.4.5
    // returns -1.
    const server = listenLoopback({});
    await connectLoopback(server.port, {});
    const socket = await server.accepted();
    socket.terminate();
    let written = 0;
    expect(() => (written = socket.write("late"))).not.toThrow();
    expect(written).toBeLessThanOrEqual(0);
  });

  test("write after peer close does not throw", async () => {
    // A response can still be on its way when the client goes away; src/wire.ts must not throw.
    const closed = Promise.withResolvers<void>();
    const server = listenLoopback({ close: () => closed.resolve() });
    const client = await connectLoopback(server.port, {});
    const socket = await server.accepted();
    client.terminate();
    await within(closed.promise, "the server's close event");
    let written = 0;
    expect(() => (written = socket.write("late"))).not.toThrow();
    expect(written).toBeLessThanOrEqual(0);
  });
});

describe("data handler buffers", () => {
  // src/client.ts keeps chunks and subarrays of them as the request head and the
  // pipelined requests, and src/exchange.ts queues them for the other connection, so
  // Bun must hand out a fresh Buffer each time and never refill it after the handler.
  const size = 8 * 1024 * 1024;

  /** Sends `payload` then 1 MiB more on the same connection, and returns what arrived first. */
  async function keepChunks(receiver: "listener" | "connect"): Promise<{ collected: Received; payload: Buffer }> {
    const payload = numberedBytes(size);
    const drains = new DrainSignal();
    const collected = new Received();
    let extra = 0;
    const receive = (_: Socket<undefined>, chunk: Buffer) => {
      if (collected.bytes < size) collected.add(chunk);
      else extra += chunk.length;
    };
    const server = listenLoopback(receiver === "listener" ? { data: receive } : { drain: () => drains.fire() });
    const client = await connectLoopback(server.port, receiver === "connect" ? { data: receive } : { drain: () => drains.fire() });
    const sender = receiver === "listener" ? client : await server.accepted();
    await writeAll(sender, payload, drains);
    await writeAll(sender, Buffer.alloc(1024 * 1024, 0xff), drains);
    await until(() => collected.bytes + extra >= size + 1024 * 1024, "both transfers");
    return { collected, payload };
  }

  for (const receiver of ["listener", "connect"] as const) {
    test(`${receiver} side keeps every chunk intact`, async () => {
      const { collected, payload } = await keepChunks(receiver);
      expect(collected.chunks.length).toBeGreaterThan(1);
      expect(collected.chunks.every((chunk) => Buffer.isBuffer(chunk))).toBe(true);
      // The 0xff bytes of the second transfer would show here if a buffer had been refilled.
      expect(collected.all().subarray(0, size).equals(payload)).toBe(true);
    });
  }
});

describe("pause and resume", () => {
  test("pause backs the peer up", async () => {
    // src/wire.ts pause() stops reading a client or Mattermost whose data the other side
    // cannot take yet; resume() must deliver every held byte, in order.
    // 32 MiB is far more than the kernel buffers between two loopback sockets (about
    // 4 MiB, measured on Linux with the default buffer sizes).
    const payload = numberedBytes(32 * 1024 * 1024);
    const received = new Received();
    const server = listenLoopback({
      data(socket, chunk) {
        if (received.bytes === 0) socket.pause();
        received.add(chunk);
      },
    });
    const drains = new DrainSignal();
    const client = await connectLoopback(server.port, { drain: () => drains.fire() });
    const socket = await server.accepted();
    let sent = false;
    const sending = writeAll(client, payload, drains).then(() => (sent = true));

    await until(() => received.bytes > 0, "the first chunk");
    const whilePaused = received.bytes;
    await Bun.sleep(QUIET_MS);
    expect(received.bytes).toBe(whilePaused);
    expect(sent).toBe(false);

    socket.resume();
    await within(sending, "the peer to finish writing");
    await until(() => received.bytes >= payload.length, "the whole payload");
    expect(received.bytes).toBe(payload.length);
    expect(received.all().equals(payload)).toBe(true);
  });

  test("pause holds back data and FIN", async () => {
    // src/client.ts onEnd() responds to the complete requests when the client has sent
    // FIN, so the end event must not overtake data still held by pause().
    const events: string[] = [];
    const server = listenLoopback(
      {
        open: (socket) => socket.pause(),
        data: (_, chunk) => void events.push(`data ${chunk.toString("latin1")}`),
        end: () => void events.push("end"),
      },
      { allowHalfOpen: true },
    );
    const client = await connectLoopback(server.port, {}, { allowHalfOpen: true });
    const socket = await server.accepted();
    client.write("request");
    client.shutdown();
    await Bun.sleep(QUIET_MS);
    expect(events).toEqual([]);

    socket.resume();
    await until(() => events.includes("end"), "the end event");
    expect(events).toEqual(["data request", "end"]);
  });
});

describe("connection ends", () => {
  test("half-open listener answers after FIN", async () => {
    // src/server.ts listens with allowHalfOpen: true, and src/client.ts onEnd() still
    // responds to the requests that arrived before the client's FIN.
    const serverEnded = Promise.withResolvers<string>();
    const request = new Received();
    const server = listenLoopback(
      {
        data: (_, chunk) => request.add(chunk),
        end(socket) {
          serverEnded.resolve(request.text());
          socket.write("response after FIN");
          socket.end();
        },
      },
      { allowHalfOpen: true },
    );
    const response = new Received();
    // A Bun.connect socket that has sent FIN itself reports the peer's FIN as a close
    // event, with no end event before it.
    const clientClosed = Promise.withResolvers<Error | undefined>();
    const client = await connectLoopback(
      server.port,
      { data: (_, chunk) => response.add(chunk), close: (_, error) => clientClosed.resolve(error) },
      { allowHalfOpen: true },
    );
    client.write("request");
    client.shutdown();

    expect(await within(serverEnded.promise, "the server's end event")).toBe("request");
    expect(await within(clientClosed.promise, "the server's FIN")).toBeUndefined();
    expect(response.text()).toBe("response after FIN");
  });

  test("terminate runs the close handler", async () => {
    // src/wire.ts destroy() calls terminate(), and src/client.ts onClose() (run from the
    // close handler) is what aborts the exchange and counts the request as finished.
    const closed = Promise.withResolvers<void>();
    const server = listenLoopback({ close: () => closed.resolve() });
    await connectLoopback(server.port, {});
    const socket = await server.accepted();
    socket.terminate();
    await within(closed.promise, "the close event");
  });

  test("end delivers what was written, then FIN", async () => {
    // src/wire.ts end() calls socket.end() once write() has taken everything queued.
    const payload = numberedBytes(64 * 1024);
    const server = listenLoopback({}, { allowHalfOpen: true });
    const received = new Received();
    const ended = Promise.withResolvers<void>();
    await connectLoopback(server.port, { data: (_, chunk) => received.add(chunk), end: () => ended.resolve() });
    const socket = await server.accepted();
    for (let offset = 0; offset < payload.length; offset += 16 * 1024) {
      const part = payload.subarray(offset, offset + 16 * 1024);
      expect(socket.write(part)).toBe(part.length);
    }
    socket.end();
    await within(ended.promise, "the client's end event");
    expect(received.all().equals(payload)).toBe(true);
  });

  test("end closes without reading on", async () => {
    // src/wire.ts end() calls shutdown(), not end(). In Bun 1.4.5, end() on an accepted
    // socket closes the descriptor instead of only sending FIN. So the close handler runs at
    // once, later bytes are never read, and the kernel resets the connection for them.
    const events: string[] = [];
    const server = listenLoopback(
      {
        data: (_, chunk) => void events.push(`data ${chunk.toString("latin1")}`),
        close: () => void events.push("close"),
      },
      { allowHalfOpen: true },
    );
    const client = await connectLoopback(server.port, {}, { allowHalfOpen: true });
    const socket = await server.accepted();
    socket.end();
    expect(events).toEqual(["close"]);
    client.write("sent after the server's FIN");
    await Bun.sleep(QUIET_MS);
    expect(events).toEqual(["close"]);
  });
});

describe("shutdown", () => {
  test("shutdown sends FIN and keeps reading", async () => {
    // src/wire.ts end() and src/client.ts close(): a closing connection sends FIN after
    // its last response and goes on reading and dropping what the client still sends,
    // so the kernel does not reset the connection before the client has read the response.
    const events: string[] = [];
    const server = listenLoopback(
      {
        data: (_, chunk) => void events.push(`data ${chunk.toString("latin1")}`),
        close: () => void events.push("close"),
      },
      { allowHalfOpen: true },
    );
    const clientEnded = Promise.withResolvers<void>();
    const received: string[] = [];
    const client = await connectLoopback(
      server.port,
      { data: (_, chunk) => void received.push(chunk.toString("latin1")), end: () => clientEnded.resolve() },
      { allowHalfOpen: true },
    );
    const socket = await server.accepted();
    socket.write("response");
    socket.shutdown();
    await within(clientEnded.promise, "the client's end event");
    expect(received.join("")).toBe("response");
    expect(events).toEqual([]);
    client.write("sent after the server's FIN");
    await Bun.sleep(QUIET_MS);
    expect(events).toEqual(["data sent after the server's FIN"]);
  });
});

describe("Bun.connect ends", () => {
  // src/upstream.ts treats Mattermost's FIN and a closed connection alike: both end the
  // exchange with lost(), and the close handler's error argument distinguishes a clean
  // close (a body delimited by the connection is complete) from a reset (it is cut off).
  test("peer FIN runs the close handler without an error", async () => {
    const server = listenLoopback({});
    const events: string[] = [];
    const closed = Promise.withResolvers<Error | undefined>();
    await connectLoopback(server.port, {
      end: () => void events.push("end"),
      close(_, error) {
        events.push("close");
        closed.resolve(error);
      },
    });
    const socket = await server.accepted();
    socket.end();
    expect(await within(closed.promise, "the close event")).toBeUndefined();
    expect(events.at(-1)).toBe("close");
  });

  test("peer reset passes an error to close", async () => {
    const server = listenLoopback({});
    const closed = Promise.withResolvers<Error | undefined>();
    await connectLoopback(server.port, { close: (_, error) => closed.resolve(error) });
    const socket = await server.accepted();
    socket.terminate();
    const error = await within(closed.promise, "the close event");
    expect(error).toBeInstanceOf(Error);
  });

  test("open runs before Bun.connect resolves", async () => {
    // src/upstream.ts creates the UpstreamConnection in whichever comes first, the open
    // handler or the resolved Bun.connect. Over TLS the order is the other way round: see
    // the TLS tests.
    const server = listenLoopback({});
    let opened: Socket<undefined> | null = null;
    const socket = await connectLoopback(server.port, { open: (s) => void (opened = s) });
    expect(opened === socket).toBe(true);
  });

  test("connect to a closed port is refused", async () => {
    // src/exchange.ts logs the error's code when Mattermost cannot be reached.
    const server = listenLoopback({});
    const port = server.port;
    server.listener.stop(true);
    const error = await within(
      Bun.connect({ hostname: HOST, port, socket: { data() {} } }).then(
        (socket) => {
          socket.terminate();
          return null;
        },
        (failure: unknown) => failure as { code?: string },
      ),
      "Bun.connect to settle",
    );
    expect(error?.code).toBe("ECONNREFUSED");
  });
});

describe("listener", () => {
  /** Binds a second listener on `port` and stops it at once. Returns the error code, or "bound". */
  function secondBind(port: number, options: { exclusive?: boolean; reusePort?: boolean }): string {
    const code = thrownCode(() => {
      // bun-types 1.4.5 declares reusePort on Bun.connect's options only, but Bun.listen reads it.
      const listener = Bun.listen({ hostname: HOST, port, socket: { data() {} }, ...options } as TCPSocketListenOptions<undefined>);
      listener.stop(true);
    });
    return code === "no error" ? "bound" : code;
  }

  test("exclusive listener rejects a second bind", () => {
    // src/server.ts listens with exclusive: true, so that a second gate on the same
    // address fails to start instead of sharing the clients.
    const server = listenLoopback({}, { exclusive: true });
    expect(secondBind(server.port, {})).toBe("EADDRINUSE");
    expect(secondBind(server.port, { exclusive: true })).toBe("EADDRINUSE");
    expect(secondBind(server.port, { reusePort: true })).toBe("EADDRINUSE");
  });

  test("plain listener rejects a second bind", () => {
    // On Linux, Bun 1.4.5 sets SO_REUSEPORT only when asked, so without exclusive the
    // second bind fails as well and exclusive: true in src/server.ts changes nothing yet.
    // It keeps the gate's port its own if a later Bun makes sharing the default.
    const server = listenLoopback({});
    expect(secondBind(server.port, {})).toBe("EADDRINUSE");
    expect(secondBind(server.port, { reusePort: true })).toBe("EADDRINUSE");
  });

  test("reusePort listeners share a port", () => {
    // The sharing that exclusive: true rules out: two listeners that both ask for it.
    const first = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} }, reusePort: true } as TCPSocketListenOptions<undefined>);
    try {
      expect(secondBind(first.port, { reusePort: true })).toBe("bound");
    } finally {
      first.stop(true);
    }
  });

  test("remoteAddress of a loopback client", async () => {
    // src/client.ts logs remoteAddress and matches it against --trusted-proxy.
    const server = listenLoopback({});
    await connectLoopback(server.port, {});
    const socket = await server.accepted();
    expect(socket.remoteAddress).toBe("127.0.0.1");
  });

  test("stop(false) keeps established connections", async () => {
    // src/server.ts shutdown() and a certificate reload call listener.stop(false) and let
    // requests in flight finish. The reload binds the same port again at once.
    const replies = new Received();
    const server = listenLoopback({ data: (socket, chunk) => void socket.write(`echo ${chunk.toString("latin1")};`) });
    const client = await connectLoopback(server.port, { data: (_, chunk) => replies.add(chunk) });
    await server.accepted();
    client.write("before");
    await until(() => replies.text() === "echo before;", "the first echo");

    server.listener.stop(false);
    const refused = await within(
      Bun.connect({ hostname: HOST, port: server.port, socket: { data() {} } }).then(
        (socket) => {
          socket.terminate();
          return "connected";
        },
        (error: unknown) => String((error as { code?: unknown }).code),
      ),
      "Bun.connect to settle",
    );
    expect(refused).toBe("ECONNREFUSED");

    client.write("after");
    await until(() => replies.text() === "echo before;echo after;", "the second echo");

    expect(secondBind(server.port, { exclusive: true })).toBe("bound");
  });
});

describe("TLS", () => {
  let dir = "";
  let files: TlsFiles = { cert: "", key: "" };
  let otherKey = "";

  /** Makes a self-signed certificate for 127.0.0.1 and returns the PEM texts. */
  function certificateTexts(name: string): TlsFiles {
    const paths = makeCertificate(dir, name);
    return { cert: readFileSync(paths.cert, "utf8"), key: readFileSync(paths.key, "utf8") };
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "preauth-gate-bun-"));
    files = certificateTexts("gate");
    otherKey = certificateTexts("other").key;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("TLS listener accepts a TLS client", async () => {
    // src/server.ts passes tls: { cert, key } to Bun.listen when --tls-cert is set.
    const server = listenLoopback({ data: (socket, chunk) => void socket.write(`echo ${chunk.toString("latin1")}`) }, { tls: files });
    const client = tlsConnect({ host: HOST, port: server.port, ca: files.cert });
    try {
      const reply = new Promise<string>((resolve, reject) => {
        client.once("secureConnect", () => client.write("ping"));
        client.once("data", (chunk: Buffer) => resolve(chunk.toString("latin1")));
        client.once("error", reject);
      });
      expect(await within(reply, "the echo over TLS")).toBe("echo ping");
      expect(client.authorized).toBe(true);
      expect((await server.accepted()).remoteAddress).toBe("127.0.0.1");
    } finally {
      client.destroy();
    }
  });

  test("createSecureContext rejects a mismatched key", () => {
    // src/server.ts reload() calls it to check the new pair before it stops the listener.
    expect(() => createSecureContext({ cert: files.cert, key: files.key })).not.toThrow();
    expect(() => createSecureContext({ cert: files.cert, key: otherKey })).toThrow();
  });

  test("TLS Bun.connect resolves before open", async () => {
    // src/upstream.ts creates the UpstreamConnection in whichever comes first, because
    // over TLS, with no handshake handler, Bun 1.4.5 resolves Bun.connect before the open
    // handler runs.
    const server = listenLoopback({}, { tls: files });
    let openRan = false;
    const opened = Promise.withResolvers<Socket<undefined>>();
    const open = (s: Socket<undefined>) => {
      openRan = true;
      opened.resolve(s);
    };
    const socket = await connectLoopback(server.port, { open }, { tls: { serverName: HOST, ca: files.cert } });
    expect(openRan).toBe(false);
    expect(socket.data).toBeUndefined();
    expect((await within(opened.promise, "the open event")) === socket).toBe(true);
  });

  test("write before the handshake waits for drain", async () => {
    // src/exchange.ts writes the request head as soon as the upstream connection is
    // open. Over TLS, write() returns 0 until the handshake is done, so src/wire.ts queues
    // the head (a negative count would drop it) and sends it from the drain that follows.
    const received = new Received();
    const server = listenLoopback({ data: (_, chunk) => received.add(chunk) }, { tls: files });
    const drains = new DrainSignal();
    const socket = await connectLoopback(
      server.port,
      { drain: () => drains.fire() },
      { tls: { serverName: HOST, ca: files.cert } },
    );
    expect(socket.write("head")).toBe(0);
    await drains.next();
    expect(socket.write("head")).toBe(4);
    await until(() => received.bytes >= 4, "the head over TLS");
    expect(received.text()).toBe("head");
  });

  test("untrusted certificate closes the connection", async () => {
    // src/upstream.ts relies on Bun.connect verifying Mattermost's certificate by default.
    // The failure reaches its close handler with no error, so lost() reports a clean close.
    const received = new Received();
    const server = listenLoopback({ data: (_, chunk) => received.add(chunk) }, { tls: files });
    const closed = Promise.withResolvers<Error | undefined>();
    const drains = new DrainSignal();
    const socket = await connectLoopback(
      server.port,
      { close: (_, error) => closed.resolve(error), drain: () => drains.fire() },
      { tls: { serverName: HOST } },
    );
    expect(socket.write("head")).toBe(0);
    expect(await within(closed.promise, "the close event")).toBeUndefined();
    expect(socket.authorized).toBe(false);
    await Bun.sleep(QUIET_MS);
    expect(received.bytes).toBe(0);
  });
});

describe("admin listener", () => {
  // src/admin.ts serves /healthz, /readyz and /metrics with Bun.serve, and /readyz
  // probes Mattermost with fetch().
  test("Bun.serve throws on a port in use", () => {
    // startAdminServer() lets this error reach main.ts, which logs it and exits.
    const first = Bun.serve({ hostname: HOST, port: 0, fetch: () => new Response("first") });
    try {
      const code = thrownCode(() => Bun.serve({ hostname: HOST, port: first.port, fetch: () => new Response("second") }).stop(true));
      expect(code).toBe("EADDRINUSE");
    } finally {
      first.stop(true);
    }
  });

  test("stop(true) closes kept-alive connections", async () => {
    // AdminServer.stop() relies on it, so that a slow readiness probe cannot hold up a shutdown.
    const server = Bun.serve({ hostname: HOST, port: 0, fetch: () => new Response("ok") });
    const response = new Received();
    const closed = Promise.withResolvers<void>();
    const client = await connectLoopback(server.port!, {
      data: (_, chunk) => response.add(chunk),
      close: () => closed.resolve(),
    });
    client.write("GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n");
    await until(() => response.text().endsWith("ok"), "the response");
    await within(server.stop(true), "Bun.serve stop(true)");
    await within(closed.promise, "the kept-alive connection to close");
  });

  test("fetch redirect manual returns the redirect", async () => {
    // probeUpstream() counts any status below 500, a redirect included, as ready.
    const upstream = Bun.serve({
      hostname: HOST,
      port: 0,
      fetch: () => new Response(null, { status: 302, headers: { location: "/login" } }),
    });
    try {
      const response = await within(fetch(`${upstream.url.origin}/api/v4/system/ping`, { redirect: "manual" }), "fetch");
      expect(response.status).toBe(302);
      expect(response.headers.get("location")).toBe("/login");
    } finally {
      upstream.stop(true);
    }
  });

  test("fetch to a closed port is refused", async () => {
    // probeUpstream() logs the error's code with "upstream unreachable".
    const server = listenLoopback({});
    const port = server.port;
    server.listener.stop(true);
    const error = await within(
      fetch(`http://${HOST}:${port}/`).then(
        () => null,
        (failure: unknown) => failure as { code?: string },
      ),
      "fetch to settle",
    );
    expect(error?.code).toBe("ECONNREFUSED");
  });

  test("aborted fetch rejects with signal aborted", async () => {
    // probeUpstream() aborts after READINESS_TIMEOUT_MS and reports a timeout when the
    // signal is aborted.
    const server = listenLoopback({});
    const controller = new AbortController();
    const probe = fetch(`http://${HOST}:${server.port}/`, { signal: controller.signal }).then(
      () => "resolved",
      (error: unknown) => (error as Error).name,
    );
    await server.accepted();
    controller.abort();
    expect(await within(probe, "fetch to settle")).toBe("AbortError");
    expect(controller.signal.aborted).toBe(true);
  });
});

describe("URL path parsing", () => {
  // src/target.ts isForwardable() forwards a path only when new URL() leaves it unchanged.
  const rewritten: [string, string][] = [
    ["/static/../api/v4/users/me", "/api/v4/users/me"],
    ["/static/%2e%2e/api/v4/users/me", "/api/v4/users/me"],
    ["/static/./app.js", "/static/app.js"],
    ["/static\\app.js", "/static/app.js"],
    ["/a{b}^`c", "/a%7Bb%7D%5E%60c"],
    ['/a"b', "/a%22b"],
  ];
  for (const [path, parsed] of rewritten) {
    test(`new URL() turns ${path} into ${parsed}`, () => {
      expect(new URL(`http://gate.invalid${path}`).pathname).toBe(parsed);
    });
  }

  test("new URL() keeps an encoded path", () => {
    const path = "/api/v4/files/a%2fb%5cc%00;d:@!$&'()*+,=";
    expect(new URL(`http://gate.invalid${path}`).pathname).toBe(path);
  });
});
