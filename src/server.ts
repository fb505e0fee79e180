// The gate's HTTP server: parse the target, decide, then reject, forward or bridge.
// Everything that depends on the configuration sits in one state object, so a reload
// swaps it in one assignment while requests and WebSockets in flight keep going.
import type { Server } from "bun";
import { trustedProxyMatcher, type Config } from "./config.ts";
import { createGate, type Decision, type Gate } from "./gate.ts";
import { SECRET_HEADER, type ClientInfo } from "./headers.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { createForwarder, type Forwarder } from "./proxy.ts";
import { createRejectionLog } from "./rejection-log.ts";
import { gateError, rejection } from "./responses.ts";
import { parseRequestUrl, type RequestTarget } from "./target.ts";
import {
  createWebSocketHandler,
  isWebSocketUpgrade,
  upgradeWebSocket,
  type BridgeData,
  type UpgradeOptions,
} from "./websocket.ts";

export interface RunningGate {
  /** The server accepting connections now; a reload that changes TLS replaces it. */
  readonly server: () => Server<BridgeData>;
  readonly gate: () => Gate;
  /** Applies a new configuration; the caller has validated it. */
  reload(config: Config): void;
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
const WEBSOCKET_BACKPRESSURE_LIMIT = 16 * 1024 * 1024;
/** Mattermost pings every 60 s and gives up after 100 s, so no idle cut below that. */
const MIN_WEBSOCKET_IDLE_SECONDS = 120;

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
      logger,
      metrics,
    },
    isTrustedProxy: trustedProxyMatcher(config.trustedProxies),
    protocol: config.tls === null ? "http" : "https",
  };
}

/**
 * Parses the target and decides. Any exception here is a rejection: the authentication
 * path fails closed, never with a 500 and never open.
 */
function decideSafely(state: GateState, request: Request, logger: Logger): Checked {
  try {
    const parsed = parseRequestUrl(request.url);
    if (!parsed.ok) return { kind: "bad-target" };
    const isUpgrade = isWebSocketUpgrade(request);
    const decision = state.gate.decide(parsed.target.path, request.headers.get(SECRET_HEADER), isUpgrade);
    return { kind: "decided", target: parsed.target, decision, isUpgrade };
  } catch (error) {
    logger.error({ error: (error as Error).name }, "authentication check failed");
    return { kind: "decided", target: null, decision: { outcome: "rejected", reason: "wrong" }, isUpgrade: false };
  }
}

export function startGate(initialConfig: Config, logger: Logger, metrics: Metrics): RunningGate {
  let state = buildState(initialConfig, logger, metrics);
  const rejections = createRejectionLog(logger);
  const websocketHandler = createWebSocketHandler({ backpressureLimit: WEBSOCKET_BACKPRESSURE_LIMIT, logger, metrics });

  async function handleRequest(request: Request, server: Server<BridgeData>): Promise<Response | undefined> {
    const arrival = Bun.nanoseconds();
    const current = state;
    const checked = decideSafely(current, request, logger);
    if (checked.kind === "bad-target") {
      return gateError(400, "Bad Request: invalid request target", request.method);
    }
    const { target, decision, isUpgrade } = checked;
    metrics.countDecision(decision);
    if (target === null || decision.outcome === "rejected") {
      rejections.record({
        client: server.requestIP(request)?.address ?? "unknown",
        method: request.method,
        path: target?.path ?? null,
        userAgent: request.headers.get("user-agent"),
        reason: decision.outcome === "rejected" ? decision.reason : "wrong",
      });
      metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9);
      return rejection(request.method);
    }

    const address = server.requestIP(request)?.address ?? "unknown";
    const client: ClientInfo = { address, trusted: current.isTrustedProxy(address), protocol: current.protocol };
    // Mattermost can take minutes to respond to some requests, so the upstream timeout,
    // not the client idle timeout, limits how long the gate waits.
    server.timeout(request, 0);
    if (isUpgrade) return upgradeWebSocket(request, server, target, client, current.upgradeOptions);
    const response = await current.forward(request, target, client);
    metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9);
    return response;
  }

  function listen(config: Config): Server<BridgeData> {
    // NOTE: reusePort lets a replacement server bind the same address while the old one
    // drains after a TLS or address change. Linux only shares the port between processes
    // of the same user, which systemd's DynamicUser makes unique to the gate.
    return Bun.serve<BridgeData>({
      hostname: config.listen.hostname,
      port: config.listen.port,
      reusePort: true,
      idleTimeout: config.idleTimeoutSeconds,
      maxRequestBodySize: config.maxBodyBytes,
      tls: config.tls === null ? undefined : { cert: config.tls.cert, key: config.tls.key },
      fetch: handleRequest,
      websocket: {
        ...websocketHandler,
        idleTimeout: Math.max(config.idleTimeoutSeconds, MIN_WEBSOCKET_IDLE_SECONDS),
        sendPings: true,
        backpressureLimit: WEBSOCKET_BACKPRESSURE_LIMIT,
        closeOnBackpressureLimit: true,
      },
      error(error) {
        logger.error({ error: error.name }, "request handler failed");
        return gateError(500, "Internal Server Error", "GET");
      },
    });
  }

  ensureAddressFree(initialConfig);
  let server = listen(initialConfig);
  logger.info(startupFields(initialConfig, state.gate, server), "gate started");

  return {
    server: () => server,
    gate: () => state.gate,
    reload(requested) {
      const previous = state.config;
      // Port 0 picks a free port at start-up; on reload it means "keep the port in use".
      const config: Config =
        requested.listen.port === 0 ? { ...requested, listen: { ...requested.listen, port: server.port! } } : requested;
      const listenChanged =
        config.listen.hostname !== previous.listen.hostname || config.listen.port !== previous.listen.port;
      const tlsChanged = config.tls?.cert !== previous.tls?.cert || config.tls?.key !== previous.tls?.key;
      // Build the new listener first: if it fails, the running configuration stays.
      const replacement = listenChanged || tlsChanged ? listen(config) : null;
      state = buildState(config, logger, metrics);
      if (replacement !== null) {
        const old = server;
        server = replacement;
        // Connections already accepted, WebSockets included, stay on the old server
        // until they end; it only stops accepting new ones.
        void old.stop(false);
      }
      logger.info({ ...startupFields(config, state.gate, server), new_listener: replacement !== null }, "configuration reloaded");
    },
    async shutdown() {
      const grace = state.config.shutdownGraceMs;
      const stopped = server.stop(false);
      for (const socket of websocketHandler.openSockets) socket.close(1001, "server shutting down");
      const finished = await Promise.race([stopped.then(() => true), Bun.sleep(grace).then(() => false)]);
      if (!finished) {
        logger.warn({ grace_seconds: grace / 1000 }, "requests still in flight after the grace period");
        await server.stop(true);
      }
      rejections.stop();
    },
  };
}

/**
 * Throws when another socket already listens on the configured address. The gate's own
 * listener sets SO_REUSEPORT so that a reload can replace it, and that would otherwise
 * let a second gate share the port silently and take part of the traffic.
 */
function ensureAddressFree(config: Config): void {
  if (config.listen.port === 0) return;
  const probe = Bun.listen({
    hostname: config.listen.hostname,
    port: config.listen.port,
    socket: { data() {} },
  });
  probe.stop(true);
}

/** The audit trail logged at start-up and after a reload. */
function startupFields(config: Config, gate: Gate, server: Server<BridgeData>): Record<string, unknown> {
  return {
    listen: `${server.hostname}:${server.port}`,
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
