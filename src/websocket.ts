// WebSocket tunnelling. The gate checks the client's handshake, then opens a connection
// to Mattermost of its own and writes the handshake with the secret and the other
// hop-by-hop headers removed. Once Mattermost responds with 101, the gate copies bytes
// both ways, so the subprotocol it chose and every close code reach the client unchanged
// and each direction has real backpressure. Any other status ends both connections.
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { headerValue, upstreamRequestHead, type ClientInfo } from "./headers.ts";
import { headEnd, type HeaderLine, type RequestHead } from "./http1.ts";
import { gateError, type FixedResponse } from "./responses.ts";
import { targetString, type RequestTarget } from "./target.ts";
import type { UpstreamConnection, UpstreamHandler, UpstreamPool } from "./upstream.ts";
import type { Wire } from "./wire.ts";

/** Per-configuration settings for new upgrades; a reload replaces them. */
export interface UpgradeOptions {
  readonly pool: UpstreamPool;
  readonly upstreamHost: string;
  readonly connectTimeoutMs: number;
  /** Idle time after which a tunnel is closed, in milliseconds. */
  readonly idleTimeoutMs: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** The client connection, as the tunnel that takes it over uses it. */
export interface TunnelClient {
  readonly wire: Wire;
  pauseReading(): void;
  resumeReading(): void;
  /** Sends a response of the gate's own and closes the connection after it. */
  closeWith(response: FixedResponse): void;
}

/** Time a connection gets to finish writing after its peer closed, in milliseconds. */
const CLOSE_LINGER_MS = 5_000;
/** Largest handshake response head read from Mattermost before the tunnel gives up. */
const MAX_HANDSHAKE_RESPONSE_BYTES = 16 * 1024;
/** Client bytes kept back before Mattermost's 101, above which the gate stops reading. */
const MAX_HELD_BYTES = 64 * 1024;

/** Every open tunnel, across reloads. */
export type TunnelRegistry = Set<Tunnel>;

export function isWebSocketUpgrade(headers: readonly HeaderLine[]): boolean {
  return headerValue(headers, "upgrade")?.toLowerCase() === "websocket";
}

/** Checks the handshake fields of RFC 6455 section 4.2.1 that the gate relies on. */
export function isValidHandshake(head: RequestHead): boolean {
  const headers = head.headers;
  const connection = (headerValue(headers, "connection") ?? "").toLowerCase().split(",").map((token) => token.trim());
  const key = headerValue(headers, "sec-websocket-key") ?? "";
  return (
    head.method === "GET" &&
    head.version === "1.1" &&
    connection.includes("upgrade") &&
    headerValue(headers, "sec-websocket-version") === "13" &&
    /^[A-Za-z0-9+/]{22}==$/.test(key)
  );
}

/** A close frame with `code` and `reason`; frames from a client must be masked (RFC 6455 section 5.3). */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
  // A control frame's payload is at most 125 bytes, so one length byte always fits.
  const header = Buffer.from([0x88, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([header, payload]);
  const mask = crypto.getRandomValues(new Uint8Array(4));
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
  return Buffer.concat([header, mask, payload]);
}

export class Tunnel implements UpstreamHandler {
  private upstream: UpstreamConnection | null = null;
  /** True once Mattermost has accepted the handshake with 101. */
  upgraded = false;
  private closed = false;
  /** Client bytes received before Mattermost's 101. */
  private waitingChunks: Buffer[] = [];
  private waitingBytes = 0;
  private response: Buffer | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  /** performance.now() of the last byte in either direction. */
  lastActivity = performance.now();

  constructor(
    private readonly client: TunnelClient,
    private readonly head: RequestHead,
    private readonly target: RequestTarget,
    private readonly info: ClientInfo,
    private readonly options: UpgradeOptions,
    private readonly tunnels: TunnelRegistry,
  ) {}

  /** Connects to Mattermost and sends the handshake; the client's bytes wait for the 101. */
  start(): void {
    const { connectTimeoutMs, pool } = this.options;
    this.tunnels.add(this);
    this.connectTimer = setTimeout(() => this.connectFailed("connect timed out"), connectTimeoutMs);
    pool.open().then(
      (connection) => {
        if (this.connectTimer !== null) clearTimeout(this.connectTimer);
        this.connectTimer = null;
        if (this.closed) {
          connection.wire.destroy();
          return;
        }
        this.upstream = connection;
        connection.handler = this;
        connection.wire.write(this.handshake());
      },
      (error: unknown) => this.connectFailed(String((error as { code?: string }).code ?? (error as Error).name)),
    );
  }

  private connectFailed(error: string): void {
    if (this.closed || this.upstream !== null) return;
    this.options.logger.warn({ path: this.target.path, error }, "upstream WebSocket connection failed");
    this.finish();
    this.client.closeWith(gateError(502, "Bad Gateway: Mattermost is unreachable", this.head.method));
  }

  /** Builds the handshake request sent to Mattermost. */
  private handshake(): Buffer {
    // The hop-by-hop headers go with the others, and a WebSocket handshake needs exactly
    // these two back.
    return upstreamRequestHead(
      "GET",
      targetString(this.target),
      this.head.headers,
      this.info,
      this.options.upstreamHost,
      "Connection: Upgrade\r\nUpgrade: websocket\r\n",
    );
  }

  /** Relays client bytes, keeping them back until Mattermost has switched protocols. */
  onClientData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActivity = performance.now();
    if (!this.upgraded) {
      // Nothing the client sends may reach Mattermost before Mattermost has switched the
      // connection to WebSocket. Otherwise, after a refused handshake on a kept-alive
      // connection, the client could send plain HTTP requests past the gate.
      this.waitingChunks.push(chunk);
      this.waitingBytes += chunk.length;
      if (this.waitingBytes >= MAX_HELD_BYTES) this.client.pauseReading();
      return;
    }
    this.options.metrics.countBytes("in", chunk.length);
    if (!this.upstream!.wire.write(chunk)) this.client.pauseReading();
  }

  onClientDrain(): void {
    if (this.upgraded && this.upstream !== null) this.upstream.wire.resume();
  }

  /** Ends Mattermost's connection after the client's closed, once what it sent is written. */
  onClientClose(): void {
    if (this.closed) return;
    this.finish();
    const upstream = this.upstream;
    if (upstream === null) return;
    upstream.handler = null;
    upstream.wire.end();
    setTimeout(() => upstream.wire.destroy(), CLOSE_LINGER_MS).unref();
  }

  // UpstreamHandler
  onData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActivity = performance.now();
    if (this.upgraded) {
      this.options.metrics.countBytes("out", chunk.length);
      if (!this.client.wire.write(chunk)) this.upstream?.wire.pause();
      return;
    }
    const response = this.response === null ? chunk : Buffer.concat([this.response, chunk]);
    const end = headEnd(response);
    if (end < 0 && response.length <= MAX_HANDSHAKE_RESPONSE_BYTES) {
      this.response = response;
      return;
    }
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(response.subarray(0, 13).toString("latin1"))?.[1] ?? 0);
    if (end < 0 || status !== 101) {
      this.rejectUpgrade(status);
      return;
    }
    this.startRelay(response);
  }

  onDrain(): void {
    if (this.upgraded) this.client.resumeReading();
  }

  /** Ends the client's connection after Mattermost's closed, once what it sent is written. */
  onClose(): void {
    if (this.closed) return;
    if (!this.upgraded) {
      this.rejectUpgrade(0);
      return;
    }
    this.finish();
    this.client.wire.end();
    const wire = this.client.wire;
    setTimeout(() => wire.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Ends both connections; the client learns Mattermost's status, never its connection. */
  private rejectUpgrade(status: number): void {
    this.options.logger.warn({ path: this.target.path, status }, "upstream rejected the WebSocket upgrade");
    this.finish();
    const upstream = this.upstream;
    if (upstream !== null) {
      upstream.handler = null;
      upstream.wire.destroy();
    }
    const clientStatus = status >= 400 && status <= 599 ? status : 502;
    this.client.closeWith(
      gateError(clientStatus, `Mattermost rejected the WebSocket upgrade with status ${status}`, this.head.method),
    );
  }

  /** Relays bytes both ways once Mattermost has responded with 101. */
  private startRelay(handshakeResponse: Buffer): void {
    const { metrics } = this.options;
    this.upgraded = true;
    this.response = null;
    metrics.websocketOpened();
    metrics.countBytes("out", handshakeResponse.length);
    this.client.wire.write(handshakeResponse);
    const waiting = this.waitingChunks;
    this.waitingChunks = [];
    this.waitingBytes = 0;
    for (const chunk of waiting) this.onClientData(chunk);
    this.client.resumeReading();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.tunnels.delete(this);
    if (this.upgraded) this.options.metrics.websocketClosed();
  }

  /** Closes with code 1001 (going away): a close frame to each side, then the end of both. */
  goAway(reason: string): void {
    const upstream = this.upstream;
    const upgraded = this.upgraded;
    this.finish();
    if (upstream !== null) upstream.handler = null;
    if (upgraded) {
      // NOTE: the gate does not parse frames, so if a frame is half-way through either
      // connection, the close frame lands inside it and the peer reports a protocol error
      // instead of 1001.
      this.client.wire.end(closeFrame(1001, reason, false));
      upstream?.wire.end(closeFrame(1001, reason, true));
    } else {
      this.client.wire.end();
      upstream?.wire.end();
    }
  }

  /** Closes both connections now. */
  destroy(): void {
    this.finish();
    this.client.wire.destroy();
    this.upstream?.wire.destroy();
  }
}

/** Closes every tunnel with code 1001 (going away). */
export function closeTunnels(tunnels: TunnelRegistry, reason: string): void {
  for (const tunnel of [...tunnels]) tunnel.goAway(reason);
}

/** Destroys every tunnel still open, for the end of the shutdown grace period. */
export function destroyTunnels(tunnels: TunnelRegistry): void {
  for (const tunnel of [...tunnels]) tunnel.destroy();
}
