// WebSocket tunnelling. The gate checks the client's handshake, then opens a TCP (or TLS)
// connection to Mattermost and writes the handshake with the secret and the other
// hop-by-hop headers removed. Once Mattermost responds with 101, the gate copies bytes
// both ways, so the subprotocol it chose and every close code reach the client unchanged
// and each direction has real backpressure. Any other status ends both connections.
import { connect as connectTcp, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { toUpstreamHeaders, type ClientInfo } from "./headers.ts";
import { gateError, writeFixedToSocket } from "./responses.ts";
import { targetString, type RequestTarget } from "./target.ts";

/** Per-configuration settings for new upgrades; a reload replaces them. */
export interface UpgradeOptions {
  readonly upstreamOrigin: string;
  readonly connectTimeoutMs: number;
  /** Idle time after which a tunnel is closed, in milliseconds. */
  readonly idleTimeoutMs: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** Time a connection gets to finish writing after its peer closed, in milliseconds. */
const CLOSE_LINGER_MS = 5_000;
/** Largest handshake response head read from Mattermost before the tunnel gives up. */
const MAX_HANDSHAKE_RESPONSE_BYTES = 16 * 1024;

/** An open tunnel, as the shutdown needs it. */
export interface Tunnel {
  readonly client: Duplex;
  readonly upstream: Socket;
  /** True once Mattermost has accepted the handshake with 101. */
  upgraded: boolean;
}

/** Every open tunnel, across reloads. */
export type TunnelRegistry = Set<Tunnel>;

export function isWebSocketUpgrade(headers: Headers): boolean {
  return headers.get("upgrade")?.toLowerCase() === "websocket";
}

/** Checks the handshake fields of RFC 6455 section 4.2.1 that the gate relies on. */
export function isValidHandshake(method: string, headers: Headers): boolean {
  const connection = (headers.get("connection") ?? "").toLowerCase().split(",").map((token) => token.trim());
  const key = headers.get("sec-websocket-key") ?? "";
  return (
    method === "GET" &&
    connection.includes("upgrade") &&
    headers.get("sec-websocket-version") === "13" &&
    /^[A-Za-z0-9+/]{22}==$/.test(key)
  );
}

/** Builds the handshake request sent to Mattermost. */
function upstreamHandshake(target: RequestTarget, incoming: Headers, client: ClientInfo): string {
  // toUpstreamHeaders drops Connection and Upgrade with the other hop-by-hop headers,
  // and a WebSocket handshake needs exactly these two back.
  const headers = toUpstreamHeaders(incoming, client);
  headers.set("connection", "Upgrade");
  headers.set("upgrade", "websocket");
  const lines = [`GET ${targetString(target)} HTTP/1.1`];
  headers.forEach((value, name) => lines.push(`${name}: ${value}`));
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** A close frame with `code` and `reason`; frames from a client must be masked (RFC 6455 section 5.3). */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
  // A control frame's payload is at most 125 bytes, so one length byte always fits.
  const header = Buffer.from([0x88, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([header, payload]);
  const mask = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
  return Buffer.concat([header, mask, payload]);
}

/**
 * Tunnels an upgrade that the gate has allowed. Sends 400 for an invalid handshake, before
 * contacting Mattermost, and 502 when Mattermost cannot be reached.
 */
export function tunnelWebSocket(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  incoming: Headers,
  target: RequestTarget,
  client: ClientInfo,
  options: UpgradeOptions,
  tunnels: TunnelRegistry,
): void {
  const { logger, metrics } = options;
  const method = req.method ?? "GET";
  if (!isValidHandshake(method, incoming)) {
    writeFixedToSocket(socket, gateError(400, "Bad Request: invalid WebSocket handshake", method));
    return;
  }
  const origin = new URL(options.upstreamOrigin);
  const secure = origin.protocol === "https:";
  const port = Number(origin.port || (secure ? 443 : 80));
  const host = origin.hostname.replace(/^\[(.*)\]$/, "$1");
  const upstream = secure ? connectTls({ host, port, servername: host }) : connectTcp({ host, port });
  const connectEvent = secure ? "secureConnect" : "connect";

  const connectTimer = setTimeout(() => upstream.destroy(new Error("connect timed out")), options.connectTimeoutMs);
  upstream.once("error", (error) => {
    if (tunnel !== null) return;
    clearTimeout(connectTimer);
    logger.warn({ path: target.path, error: (error as { code?: string }).code ?? error.name }, "upstream WebSocket connection failed");
    if (!socket.destroyed) writeFixedToSocket(socket, gateError(502, "Bad Gateway: Mattermost is unreachable", method));
  });
  socket.on("error", () => upstream.destroy());

  let tunnel: Tunnel | null = null;
  upstream.once(connectEvent, () => {
    clearTimeout(connectTimer);
    if (socket.destroyed) {
      upstream.destroy();
      return;
    }
    const opened: Tunnel = { client: socket, upstream, upgraded: false };
    tunnel = opened;
    tunnels.add(opened);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      tunnels.delete(opened);
      if (opened.upgraded) metrics.websocketClosed();
    };
    // Nothing the client sends may reach Mattermost before Mattermost has switched the
    // connection to WebSocket. Otherwise, after a refused handshake on a kept-alive
    // connection, the client could send plain HTTP requests past the gate.
    socket.pause();
    upstream.write(upstreamHandshake(target, incoming, client));

    let response = Buffer.alloc(0);
    const onResponseHead = (chunk: Buffer) => {
      response = Buffer.concat([response, chunk]);
      const headEnd = response.indexOf("\r\n\r\n");
      if (headEnd < 0 && response.length <= MAX_HANDSHAKE_RESPONSE_BYTES) return;
      upstream.off("data", onResponseHead);
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(response.subarray(0, 13).toString("latin1"))?.[1] ?? 0);
      if (headEnd < 0 || status !== 101) {
        rejectUpgrade(status);
        return;
      }
      startRelay(response);
    };
    upstream.on("data", onResponseHead);

    /** Ends both connections; the client learns Mattermost's status, never its connection. */
    function rejectUpgrade(status: number): void {
      close();
      upstream.destroy();
      logger.warn({ path: target.path, status }, "upstream rejected the WebSocket upgrade");
      const clientStatus = status >= 400 && status <= 599 ? status : 502;
      writeFixedToSocket(socket, gateError(clientStatus, `Mattermost rejected the WebSocket upgrade with status ${status}`, method));
    }

    /** Relays bytes both ways once Mattermost has responded with 101. */
    function startRelay(handshakeResponse: Buffer): void {
      opened.upgraded = true;
      metrics.websocketOpened();
      metrics.countBytes("out", handshakeResponse.byteLength);
      socket.write(handshakeResponse);
      if (head.length > 0) upstream.write(head);
      upstream.on("data", (chunk: Buffer) => metrics.countBytes("out", chunk.byteLength));
      socket.on("data", (chunk: Buffer) => metrics.countBytes("in", chunk.byteLength));
      socket.pipe(upstream);
      upstream.pipe(socket);
      socket.resume();
    }

    // Mattermost pings every 60 s, so a tunnel idle for longer has lost its peer.
    upstream.setTimeout(options.idleTimeoutMs, () => upstream.destroy());
    // Either side closing ends the other once what was read from it is written, and
    // destroys it if it has not closed a few seconds later.
    const closeOther = (other: Duplex) => () => {
      close();
      other.end();
      setTimeout(() => other.destroy(), CLOSE_LINGER_MS).unref();
    };
    upstream.on("close", closeOther(socket));
    socket.on("close", closeOther(upstream));
    upstream.on("error", () => (close(), socket.destroy()));
    socket.on("error", () => (close(), upstream.destroy()));
  });
}

/**
 * Closes every tunnel with code 1001 (going away): a close frame to the client, a masked
 * close frame to Mattermost, then the end of both connections.
 */
export function closeTunnels(tunnels: TunnelRegistry, reason: string): void {
  for (const tunnel of tunnels) {
    const { client, upstream } = tunnel;
    client.unpipe(upstream);
    upstream.unpipe(client);
    if (tunnel.upgraded) {
      // NOTE: the gate does not parse frames, so if a frame is half-way through either
      // connection, the close frame lands inside it and the peer reports a protocol error
      // instead of 1001.
      client.end(closeFrame(1001, reason, false));
      upstream.end(closeFrame(1001, reason, true));
    } else {
      client.end();
      upstream.end();
    }
  }
}

/** Destroys every tunnel still open, for the end of the shutdown grace period. */
export function destroyTunnels(tunnels: TunnelRegistry): void {
  for (const tunnel of tunnels) {
    tunnel.client.destroy();
    tunnel.upstream.destroy();
  }
}
