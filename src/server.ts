// The gate's HTTP server: parse the raw target, decide, then reject, forward or tunnel.
// Everything that depends on the configuration sits in one state object, so a reload
// swaps it in one assignment while requests and WebSockets in flight keep going.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { createSecureContext } from "node:tls";
import type { Duplex } from "node:stream";
import { trustedProxyMatcher, type Config } from "./config.ts";
import { createGate, type Decision, type Gate } from "./gate.ts";
import { headersFromRaw, SECRET_HEADER, type ClientInfo } from "./headers.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { createForwarder, type Forwarder } from "./proxy.ts";
import { createRejectionLog } from "./rejection-log.ts";
import { gateError, rejection, sendFixed, writeFixedToSocket, type FixedResponse } from "./responses.ts";
import { parseRequestTarget, type RequestTarget } from "./target.ts";
import {
  closeTunnels,
  destroyTunnels,
  isWebSocketUpgrade,
  tunnelWebSocket,
  type TunnelRegistry,
  type UpgradeOptions,
} from "./websocket.ts";

export interface RunningGate {
  /** The server accepting connections now; a reload that changes the certificate replaces it. */
  readonly server: () => Server;
  readonly gate: () => Gate;
  /**
   * Applies a new configuration that the caller has validated. Rejects, keeping the
   * running configuration, when the new certificate cannot be used.
   */
  reload(config: Config): Promise<void>;
  /**
   * Stops accepting connections, closes WebSockets with 1001 and waits up to the grace
   * period for requests in flight before closing what is left.
   */
  shutdown(): Promise<void>;
}

/** Everything a request needs that a reload can change. */
interface GateState {
  readonly config: Config;
  readonly gate: Gate;
  readonly forward: Forwarder;
  readonly upgradeOptions: UpgradeOptions;
  readonly isTrustedProxy: (address: string) => boolean;
  readonly protocol: "http" | "https";
}

/** The outcome of parsing and deciding; `target` is null when deciding failed. */
type Checked =
  | { readonly kind: "bad-target" }
  | {
      readonly kind: "decided";
      readonly target: RequestTarget | null;
      readonly decision: Decision;
      readonly isUpgrade: boolean;
    };

const WEBSOCKET_CONNECT_TIMEOUT_MS = 30_000;
/** Mattermost pings every 60 s and gives up after 100 s, so no idle cut below that. */
const MIN_WEBSOCKET_IDLE_SECONDS = 120;
/** Time a client has to send the request head, in milliseconds. */
const HEADERS_TIMEOUT_MS = 60_000;

function buildState(config: Config, logger: Logger, metrics: Metrics): GateState {
  return {
    config,
    gate: createGate(config),
    forward: createForwarder({
      upstreamOrigin: config.upstreamOrigin,
      upstreamTimeoutMs: config.upstreamTimeoutMs,
      maxBodyBytes: config.maxBodyBytes,
      logger,
      metrics,
    }),
    upgradeOptions: {
      upstreamOrigin: config.upstreamOrigin,
      connectTimeoutMs: Math.min(config.upstreamTimeoutMs, WEBSOCKET_CONNECT_TIMEOUT_MS),
      idleTimeoutMs: Math.max(config.idleTimeoutSeconds, MIN_WEBSOCKET_IDLE_SECONDS) * 1000,
      logger,
      metrics,
    },
    isTrustedProxy: trustedProxyMatcher(config.trustedProxies),
    protocol: config.tls === null ? "http" : "https",
  };
}

/**
 * Parses the raw target and decides. Any exception here is a rejection: the
 * authentication path fails closed, never with a 500 and never open.
 */
function decideSafely(state: GateState, rawTarget: string, headers: Headers, logger: Logger): Checked {
  try {
    const parsed = parseRequestTarget(rawTarget);
    if (!parsed.ok) return { kind: "bad-target" };
    const isUpgrade = isWebSocketUpgrade(headers);
    const decision = state.gate.decide(parsed.target.path, headers.get(SECRET_HEADER), isUpgrade);
    return { kind: "decided", target: parsed.target, decision, isUpgrade };
  } catch (error) {
    logger.error({ error: (error as Error).name }, "authentication check failed");
    return { kind: "decided", target: null, decision: { outcome: "rejected", reason: "wrong" }, isUpgrade: false };
  }
}

/** Creates the HTTP or HTTPS server with the gate's timeouts. */
function createListener(config: Config): Server {
  const server: Server =
    config.tls === null ? createHttpServer() : createHttpsServer({ cert: config.tls.cert, key: config.tls.key });
  server.keepAliveTimeout = config.idleTimeoutSeconds * 1000;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // Uploads can take longer than any fixed limit, and Mattermost can take minutes to
  // respond, so the upstream timeout, not a request timeout, limits a request.
  server.requestTimeout = 0;
  server.timeout = 0;
  return server;
}

function listen(server: Server, config: Config): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.listen.port, config.listen.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

export async function startGate(initialConfig: Config, logger: Logger, metrics: Metrics): Promise<RunningGate> {
  let state = buildState(initialConfig, logger, metrics);
  const rejections = createRejectionLog(logger);
  const tunnels: TunnelRegistry = new Set();
  let requestsInFlight = 0;
  let onIdle: (() => void) | null = null;

  /**
   * Decides on a request and sends the response itself when the request is rejected or
   * invalid. Returns what forwarding needs, or null when the response is already sent.
   */
  function admit(
    req: IncomingMessage,
    reply: (response: FixedResponse) => void,
    arrival: number,
  ): { current: GateState; headers: Headers; target: RequestTarget; client: ClientInfo; isUpgrade: boolean } | null {
    const current = state;
    const method = req.method ?? "GET";
    const headers = headersFromRaw(req.rawHeaders);
    const checked = decideSafely(current, req.url ?? "", headers, logger);
    if (checked.kind === "bad-target") {
      reply(gateError(400, "Bad Request: invalid request target", method));
      return null;
    }
    const { target, decision, isUpgrade } = checked;
    metrics.countDecision(decision);
    const address = req.socket.remoteAddress ?? "unknown";
    if (target === null || decision.outcome === "rejected") {
      rejections.record({
        client: address,
        method,
        path: target?.path ?? null,
        userAgent: headers.get("user-agent"),
        reason: decision.outcome === "rejected" ? decision.reason : "wrong",
      });
      metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9);
      reply(rejection(method));
      return null;
    }
    const client: ClientInfo = { address, trusted: current.isTrustedProxy(address), protocol: current.protocol };
    return { current, headers, target, client, isUpgrade };
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
    const arrival = Bun.nanoseconds();
    requestsInFlight++;
    res.once("close", () => {
      requestsInFlight--;
      if (requestsInFlight === 0) onIdle?.();
    });
    try {
      const admitted = admit(req, (response) => sendFixed(res, response), arrival);
      if (admitted === null) return;
      const { current, headers, target, client, isUpgrade } = admitted;
      if (isUpgrade) {
        // An upgrade that node:http did not treat as one lacks `Connection: upgrade`.
        sendFixed(res, gateError(400, "Bad Request: invalid WebSocket handshake", req.method ?? "GET"));
        return;
      }
      // Sent only now, so a rejected upload never gets "100 Continue".
      if (expectsContinue) res.writeContinue();
      await current.forward({
        req,
        res,
        headers,
        target,
        client,
        onResponseStart: () => metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9),
      });
    } catch (error) {
      logger.error({ error: (error as Error).name }, "request handler failed");
      if (!res.headersSent) sendFixed(res, gateError(500, "Internal Server Error", req.method ?? "GET"));
      else res.destroy();
    }
  }

  function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => socket.destroy());
    try {
      const admitted = admit(req, (response) => writeFixedToSocket(socket, response), Bun.nanoseconds());
      if (admitted === null) return;
      const { current, headers, target, client, isUpgrade } = admitted;
      if (!isUpgrade) {
        // NOTE: the gate tunnels WebSocket upgrades only; another upgrade (h2c, for
        // example) is answered with 400 instead of being forwarded as a plain request.
        writeFixedToSocket(socket, gateError(400, "Bad Request: only WebSocket upgrades are supported", req.method ?? "GET"));
        return;
      }
      tunnelWebSocket(req, socket, head, headers, target, client, current.upgradeOptions, tunnels);
    } catch (error) {
      logger.error({ error: (error as Error).name }, "upgrade handler failed");
      socket.destroy();
    }
  }

  /** CONNECT arrives as a bare socket too; the gate never tunnels it. */
  function handleConnect(req: IncomingMessage, socket: Duplex): void {
    socket.on("error", () => socket.destroy());
    const admitted = admit(req, (response) => writeFixedToSocket(socket, response), Bun.nanoseconds());
    if (admitted === null) return;
    writeFixedToSocket(socket, gateError(405, "Method Not Allowed: CONNECT is not forwarded", "CONNECT"));
  }

  /** Creates a server with the gate's handlers and starts it listening. */
  async function openListener(config: Config): Promise<Server> {
    const created = createListener(config);
    created.on("request", (req, res) => void handleRequest(req, res, false));
    created.on("checkContinue", (req, res) => void handleRequest(req, res, true));
    created.on("upgrade", handleUpgrade);
    created.on("connect", handleConnect);
    await listen(created, config);
    servers.add(created);
    created.once("close", () => servers.delete(created));
    return created;
  }

  /**
   * Replaces the listener after a certificate change. Bun 1.4.5's node:https has no
   * setSecureContext and ignores reusePort, so the old listener closes first and the new
   * one binds the same address. Connections already accepted stay on the old server.
   */
  async function replaceListener(config: Config): Promise<void> {
    // Checks that the key matches the certificate before the running listener closes.
    if (config.tls !== null) createSecureContext({ cert: config.tls.cert, key: config.tls.key });
    // NOTE: connections that arrive between the close and the new bind are refused, and
    // those the kernel queued on the old listener at that instant can be reset.
    server.close();
    server = await openListener(config);
  }

  /** Every server that still has connections, the current one included. */
  const servers = new Set<Server>();
  let server = await openListener(initialConfig);
  logger.info(startupFields(initialConfig, state.gate, server), "gate started");

  return {
    server: () => server,
    gate: () => state.gate,
    async reload(requested) {
      const previous = state.config;
      const address = server.address() as AddressInfo;
      // Port 0 picks a free port at start-up; on reload it means "keep the port in use".
      const config: Config =
        requested.listen.port === 0 ? { ...requested, listen: { ...requested.listen, port: address.port } } : requested;
      const listenChanged =
        config.listen.hostname !== previous.listen.hostname || config.listen.port !== previous.listen.port;
      const tlsChanged = config.tls?.cert !== previous.tls?.cert || config.tls?.key !== previous.tls?.key;
      if ((config.tls === null) !== (previous.tls === null)) {
        throw new Error("switching between HTTP and HTTPS needs a restart");
      }
      if (tlsChanged) {
        await replaceListener({ ...config, listen: { hostname: previous.listen.hostname, port: address.port } });
      }
      state = buildState(config, logger, metrics);
      server.keepAliveTimeout = config.idleTimeoutSeconds * 1000;
      if (listenChanged) {
        logger.warn(
          { listen: `${address.address}:${address.port}`, requested: `${config.listen.hostname}:${config.listen.port}` },
          "listen address changes take effect after a restart",
        );
      }
      logger.info({ ...startupFields(config, state.gate, server), new_listener: tlsChanged }, "configuration reloaded");
    },
    async shutdown() {
      const grace = state.config.shutdownGraceMs;
      for (const open of servers) {
        open.close();
        open.closeIdleConnections();
      }
      closeTunnels(tunnels, "server shutting down");
      const idle = new Promise<boolean>((resolve) => {
        if (requestsInFlight === 0) resolve(true);
        else onIdle = () => resolve(true);
      });
      const finished = await Promise.race([idle, Bun.sleep(grace).then(() => false)]);
      if (!finished) {
        logger.warn({ grace_seconds: grace / 1000 }, "requests still in flight after the grace period");
      }
      for (const open of servers) open.closeAllConnections();
      destroyTunnels(tunnels);
      rejections.stop();
    },
  };
}

/** Builds the audit trail logged at start-up and after a reload. */
function startupFields(config: Config, gate: Gate, server: Server): Record<string, unknown> {
  const address = server.address() as AddressInfo;
  return {
    listen: `${address.address}:${address.port}`,
    tls: config.tls === null ? null : config.tls.certFile,
    upstream: config.upstreamOrigin,
    whitelist: gate.whitelist.rules.map((rule) => rule.nginx),
    websocket_policy: config.websocketExempt ? "upgrade to /api/v4/websocket exempt from the secret" : "secret required",
    secrets: config.secrets.map((secret) => ({ label: secret.label, expires: secret.expiresAt?.toISOString() ?? null })),
    trusted_proxies: config.trustedProxies,
    admin_listen: config.adminListen === null ? null : `${config.adminListen.hostname}:${config.adminListen.port}`,
    weakened_by: weakeningOptions(config),
  };
}

/** Lists the options in force that let more through than the documented default. */
function weakeningOptions(config: Config): string[] {
  const weakening: string[] = [];
  if (config.websocketExempt) weakening.push("--allow websocket");
  if (config.groups.length > 0 && config.ssoServices.length === 0) {
    weakening.push("SSO routes accept any service name (no --sso-services)");
  }
  if (config.trustedProxies.length > 0) weakening.push("--trusted-proxy");
  return weakening;
}
