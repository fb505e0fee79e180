// The gate's HTTP server: parse the target, decide, then reject, forward or bridge.
import type { Server } from "bun";
import { trustedProxyMatcher, type Config } from "./config.ts";
import { createGate, type Decision, type Gate } from "./gate.ts";
import { SECRET_HEADER, type ClientInfo } from "./headers.ts";
import type { Logger } from "./log.ts";
import { createForwarder } from "./proxy.ts";
import { gateError, rejection } from "./responses.ts";
import { parseRequestUrl, type RequestTarget } from "./target.ts";
import { createWebSocketBridge, isWebSocketUpgrade, type BridgeData } from "./websocket.ts";

export interface RunningGate {
  readonly server: Server<BridgeData>;
  readonly gate: Gate;
  /** Stops accepting connections and lets requests in flight finish. */
  stop(): Promise<void>;
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

export function startGate(config: Config, logger: Logger): RunningGate {
  const gate = createGate(config);
  const isTrustedProxy = trustedProxyMatcher(config.trustedProxies);
  const forward = createForwarder({
    upstreamOrigin: config.upstreamOrigin,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    logger,
  });
  const bridge = createWebSocketBridge({
    upstreamOrigin: config.upstreamOrigin,
    connectTimeoutMs: Math.min(config.upstreamTimeoutMs, WEBSOCKET_CONNECT_TIMEOUT_MS),
    backpressureLimit: WEBSOCKET_BACKPRESSURE_LIMIT,
    logger,
  });

  /**
   * Parses the target and decides. Any exception here is a rejection: the
   * authentication path fails closed, never with a 500 and never open.
   */
  function decideSafely(request: Request): Checked {
    try {
      const parsed = parseRequestUrl(request.url);
      if (!parsed.ok) return { kind: "bad-target" };
      const isUpgrade = isWebSocketUpgrade(request);
      const decision = gate.decide(parsed.target.path, request.headers.get(SECRET_HEADER), isUpgrade);
      return { kind: "decided", target: parsed.target, decision, isUpgrade };
    } catch (error) {
      logger.error({ error: (error as Error).name }, "authentication check failed");
      return { kind: "decided", target: null, decision: { outcome: "rejected", reason: "wrong" }, isUpgrade: false };
    }
  }

  const server = Bun.serve<BridgeData>({
    hostname: config.listen.hostname,
    port: config.listen.port,
    idleTimeout: config.idleTimeoutSeconds,
    maxRequestBodySize: config.maxBodyBytes,
    async fetch(request, server) {
      const checked = decideSafely(request);
      if (checked.kind === "bad-target") {
        return gateError(400, "Bad Request: invalid request target", request.method);
      }
      const { target, decision, isUpgrade } = checked;
      if (target === null || decision.outcome === "rejected") {
        logger.info(
          {
            client: server.requestIP(request)?.address,
            method: request.method,
            path: target?.path,
            user_agent: request.headers.get("user-agent"),
            reason: decision.outcome === "rejected" ? decision.reason : "wrong",
          },
          "request rejected",
        );
        return rejection(request.method);
      }

      const client = clientInfo(server, request, isTrustedProxy);
      // Mattermost can take minutes to answer some requests; the upstream timeout, not
      // the client idle timeout, limits how long the gate waits.
      server.timeout(request, 0);
      if (isUpgrade) return bridge.upgrade(request, server, target, client);
      return forward(request, target, client);
    },
    websocket: {
      ...bridge.handler,
      idleTimeout: Math.max(config.idleTimeoutSeconds, 120),
      sendPings: true,
      backpressureLimit: WEBSOCKET_BACKPRESSURE_LIMIT,
      closeOnBackpressureLimit: true,
    },
    error(error) {
      logger.error({ error: error.name }, "request handler failed");
      return gateError(500, "Internal Server Error", "GET");
    },
  });

  logger.info(
    {
      listen: `${server.hostname}:${server.port}`,
      upstream: config.upstreamOrigin,
      whitelist: gate.whitelist.rules.map((rule) => rule.nginx),
      websocket_policy: config.websocketExempt ? "upgrade to /api/v4/websocket exempt from the secret" : "secret required",
      secrets: config.secrets.map((secret) => secret.label),
      trusted_proxies: config.trustedProxies,
      weakened_by: weakeningOptions(config),
    },
    "gate started",
  );

  return {
    server,
    gate,
    async stop() {
      await server.stop(false);
    },
  };
}

function clientInfo(server: Server<BridgeData>, request: Request, isTrustedProxy: (address: string) => boolean): ClientInfo {
  const address = server.requestIP(request)?.address ?? "unknown";
  return { address, trusted: isTrustedProxy(address), protocol: "http" };
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
