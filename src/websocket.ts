// WebSocket bridging. The gate opens the upstream WebSocket first and accepts the
// client's upgrade only once Mattermost has accepted it, so the client sees the
// subprotocol Mattermost chose and a refused upgrade stays refused.
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { upstreamRequestHeaders, type ClientInfo } from "./headers.ts";
import { gateError } from "./responses.ts";
import { upstreamUrl, type RequestTarget } from "./target.ts";

/** Per-connection state stored on the client-side socket. */
export interface BridgeData {
  readonly upstream: WebSocket;
  readonly path: string;
  /** Upstream messages that arrived before the client socket opened. */
  pending: (string | Uint8Array)[] | null;
  /** The client socket, once `open` has run. */
  client: ServerWebSocket<BridgeData> | null;
}

/** Per-configuration settings for new upgrades; a reload replaces them. */
export interface UpgradeOptions {
  readonly upstreamOrigin: string;
  readonly connectTimeoutMs: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** Settings shared by every bridged connection for the life of the process. */
export interface BridgeOptions {
  /** Bytes queued towards the upstream after which the bridge closes with 1013. */
  readonly backpressureLimit: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

// Headers the WebSocket client writes itself; Sec-WebSocket-Protocol travels as `protocols`.
const HANDSHAKE_HEADERS = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"];

/** Close codes an endpoint may send (RFC 6455 section 7.4); others become 1000. */
function sendableCloseCode(code: number): number {
  return code === 1000 || (code >= 1001 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
    ? code
    : 1000;
}

/** Checks the handshake fields of RFC 6455 section 4.2.1 that the gate relies on. */
function isValidHandshake(request: Request): boolean {
  const headers = request.headers;
  const connection = (headers.get("connection") ?? "").toLowerCase().split(",").map((token) => token.trim());
  const key = headers.get("sec-websocket-key") ?? "";
  return (
    request.method === "GET" &&
    connection.includes("upgrade") &&
    headers.get("sec-websocket-version") === "13" &&
    /^[A-Za-z0-9+/]{22}==$/.test(key)
  );
}

export function isWebSocketUpgrade(request: Request): boolean {
  return request.headers.get("upgrade")?.toLowerCase() === "websocket";
}

function messageBytes(message: string | Uint8Array): number {
  return typeof message === "string" ? Buffer.byteLength(message) : message.byteLength;
}

/**
 * Connects to the upstream, then upgrades the client. Returns a response only when the
 * upgrade fails; Bun then sends that response instead of 101.
 */
export async function upgradeWebSocket(
  request: Request,
  server: Server<BridgeData>,
  target: RequestTarget,
  client: ClientInfo,
  options: UpgradeOptions,
): Promise<Response | undefined> {
  const { connectTimeoutMs, logger, metrics } = options;
  // Check the client's handshake before Mattermost is asked for anything.
  if (!isValidHandshake(request)) {
    return gateError(400, "Bad Request: invalid WebSocket handshake", request.method);
  }
  const headers = upstreamRequestHeaders(request.headers, client);
  for (const name of HANDSHAKE_HEADERS) headers.delete(name);
  const protocols = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");

  const wsOrigin = options.upstreamOrigin.replace(/^http/, "ws");
  const upstream = new WebSocket(upstreamUrl(wsOrigin, target), {
    headers: Object.fromEntries(headers),
    protocols,
  } as unknown as string[]);
  upstream.binaryType = "arraybuffer";

  const opened = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), connectTimeoutMs);
    upstream.addEventListener("open", () => (clearTimeout(timer), resolve(true)), { once: true });
    upstream.addEventListener("close", () => (clearTimeout(timer), resolve(false)), { once: true });
  });
  if (!opened) {
    upstream.close();
    logger.warn({ path: target.path }, "upstream rejected the WebSocket upgrade");
    return gateError(502, "Bad Gateway: Mattermost rejected the WebSocket upgrade", request.method);
  }

  const data: BridgeData = { upstream, path: target.path, pending: [], client: null };
  upstream.addEventListener("message", (event) => {
    const message = typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer);
    metrics.countBytes("out", messageBytes(message));
    if (data.client === null) data.pending?.push(message);
    else data.client.send(message);
  });
  const selected = upstream.protocol;
  const accepted = server.upgrade(request, {
    data,
    headers: selected ? { "sec-websocket-protocol": selected } : undefined,
  });
  if (!accepted) {
    upstream.close(1011);
    return gateError(400, "Bad Request: invalid WebSocket upgrade", request.method);
  }
  return undefined;
}

/** The Bun.serve websocket handler that relays frames between client and upstream. */
export function createWebSocketHandler(
  options: BridgeOptions,
): WebSocketHandler<BridgeData> & { readonly openSockets: ReadonlySet<ServerWebSocket<BridgeData>> } {
  const { backpressureLimit, logger, metrics } = options;
  const openSockets = new Set<ServerWebSocket<BridgeData>>();

  return {
    openSockets,
    open(ws) {
      metrics.websocketOpened();
      openSockets.add(ws);
      const data = ws.data;
      data.client = ws;
      const upstream = data.upstream;
      upstream.addEventListener("close", (event) => {
        ws.close(sendableCloseCode(event.code), event.reason);
      });
      if (upstream.readyState !== WebSocket.OPEN) {
        ws.close(1011, "upstream closed");
        return;
      }
      for (const message of data.pending ?? []) ws.send(message);
      data.pending = null;
    },
    message(ws, message) {
      const upstream = ws.data.upstream;
      if (upstream.readyState !== WebSocket.OPEN) return;
      metrics.countBytes("in", messageBytes(message));
      upstream.send(message);
      // Bun's server socket cannot pause reading, so a peer that cannot keep up is cut
      // off with 1013 (try again later) instead of letting the queue grow without bound.
      if (upstream.bufferedAmount > backpressureLimit) {
        logger.warn({ path: ws.data.path, buffered_bytes: upstream.bufferedAmount }, "websocket backpressure limit reached");
        upstream.close(1013, "backpressure");
        ws.close(1013, "backpressure");
      }
    },
    close(ws, code, reason) {
      metrics.websocketClosed();
      openSockets.delete(ws);
      const upstream = ws.data.upstream;
      if (upstream.readyState === WebSocket.OPEN || upstream.readyState === WebSocket.CONNECTING) {
        upstream.close(sendableCloseCode(code), reason);
      }
    },
  };
}
