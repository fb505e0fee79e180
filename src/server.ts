// The gate's listener. The gate speaks HTTP/1.1 itself over Bun's TCP and TLS sockets
// (src/http1.ts parses, src/client.ts runs a connection). Everything that depends on the
// configuration sits in one state object, so a reload swaps it in one assignment while
// requests and WebSockets in flight keep going.
import type { Socket, TCPSocketListener } from "bun";
import { ClientConnection, type ConnectionHost, type GateState } from "./client.ts";
import { trustedProxyMatcher, type Config } from "./config.ts";
import { createGate, type Gate } from "./gate.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { createRejectionLog } from "./rejection-log.ts";
import { UpstreamPool, upstreamAddress } from "./upstream.ts";
import { written } from "./wire.ts";
import { closeTunnels, destroyTunnels, type TunnelRegistry } from "./websocket.ts";

export interface RunningGate {
  /** The address the gate listens on. */
  readonly address: () => { readonly hostname: string; readonly port: number };
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

const WEBSOCKET_CONNECT_TIMEOUT_MS = 30_000;
/** Mattermost pings every 60 s and gives up after 100 s, so no idle cut below that. */
const MIN_WEBSOCKET_IDLE_SECONDS = 120;
/** How often connections are checked for timeouts, in milliseconds. */
const SWEEP_INTERVAL_MS = 1_000;
/**
 * Bytes relayed between two full garbage collections, which take about a millisecond on
 * the gate's small heap. Large transfers read into buffers of up to 512 KiB that the
 * collector frees only later: in bench/ab.ts runs with 8 uploads of 5 MiB at once, this
 * lowered the largest resident memory from about 108 to about 100 MiB.
 */
const COLLECT_EVERY_BYTES = 512 * 1024 * 1024;

function buildState(config: Config, logger: Logger, metrics: Metrics, pool: UpstreamPool): GateState {
  const upstreamHost = new URL(config.upstreamOrigin).host;
  return {
    gate: createGate(config),
    forward: {
      pool,
      upstreamHost,
      upstreamTimeoutMs: config.upstreamTimeoutMs,
      maxBodyBytes: config.maxBodyBytes,
      logger,
      metrics,
    },
    upgrade: {
      pool,
      upstreamHost,
      connectTimeoutMs: Math.min(config.upstreamTimeoutMs, WEBSOCKET_CONNECT_TIMEOUT_MS),
      idleTimeoutMs: Math.max(config.idleTimeoutSeconds, MIN_WEBSOCKET_IDLE_SECONDS) * 1000,
      logger,
      metrics,
    },
    isTrustedProxy: trustedProxyMatcher(config.trustedProxies),
    protocol: config.tls === null ? "http" : "https",
    idleTimeoutMs: config.idleTimeoutSeconds * 1000,
    clientTimeoutMs: config.clientTimeoutMs,
  };
}

const socketHandlers = {
  data(socket: Socket<ClientConnection>, chunk: Buffer) {
    socket.data.onData(chunk);
  },
  drain(socket: Socket<ClientConnection>) {
    socket.data.wire.flush();
  },
  end(socket: Socket<ClientConnection>) {
    socket.data.onEnd();
  },
  close(socket: Socket<ClientConnection>) {
    socket.data.onClose();
  },
  error(socket: Socket<ClientConnection>) {
    socket.data.onClose();
  },
};

export async function startGate(initialConfig: Config, logger: Logger, metrics: Metrics): Promise<RunningGate> {
  let config = initialConfig;
  let pool = new UpstreamPool(upstreamAddress(config.upstreamOrigin));
  let state = buildState(config, logger, metrics, pool);
  const rejections = createRejectionLog(logger);
  const tunnels: TunnelRegistry = new Set();
  const connections = new Set<ClientConnection>();
  let requestsInFlight = 0;
  let onIdle: (() => void) | null = null;

  const host: ConnectionHost = {
    state: () => state,
    logger,
    metrics,
    rejections,
    tunnels,
    closing: false,
    countInFlight(change) {
      requestsInFlight += change;
      if (requestsInFlight === 0) onIdle?.();
    },
  };

  function listen(settings: Config): TCPSocketListener<ClientConnection> {
    return Bun.listen<ClientConnection>({
      hostname: settings.listen.hostname,
      port: settings.listen.port,
      // A client that sends FIN after its request still gets the response.
      allowHalfOpen: true,
      // A second process on the same address fails to start instead of sharing it.
      exclusive: true,
      tls: settings.tls === null ? undefined : { cert: settings.tls.cert, key: settings.tls.key },
      socket: {
        ...socketHandlers,
        open(socket) {
          const connection = new ClientConnection(socket as Socket<unknown>, host);
          socket.data = connection;
          connections.add(connection);
        },
        close(socket) {
          connections.delete(socket.data);
          socket.data.onClose();
        },
      },
    });
  }

  let collectedAt = 0;
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const connection of connections) connection.sweep(now);
    if (written.bytes - collectedAt >= COLLECT_EVERY_BYTES) {
      collectedAt = written.bytes;
      Bun.gc(true);
    }
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();

  let listener = listen(config);
  const address = () => ({ hostname: listener.hostname, port: listener.port });
  /** The address as configured at start-up, with the port in use: what a reload compares with. */
  const started = { hostname: config.listen.hostname, port: listener.port };
  logger.info(startupFields(config, state.gate, address()), "gate started");

  return {
    address,
    gate: () => state.gate,
    async reload(requested) {
      const previous = config;
      const bound = address();
      // Port 0 picks a free port at start-up; on reload it means "keep the port in use".
      const next: Config =
        requested.listen.port === 0 ? { ...requested, listen: { ...requested.listen, port: bound.port } } : requested;
      // The listener keeps the address it started with, so a reload compares with that.
      const listenChanged = next.listen.hostname !== started.hostname || next.listen.port !== started.port;
      const tlsChanged = next.tls?.cert !== previous.tls?.cert || next.tls?.key !== previous.tls?.key;
      if ((next.tls === null) !== (previous.tls === null)) {
        throw new Error("switching between HTTP and HTTPS needs a restart");
      }
      if (tlsChanged && next.tls !== null) {
        // Checks that the key matches the certificate before the running listener closes.
        // node:tls is loaded only here, as it adds several megabytes to every process.
        const { createSecureContext } = await import("node:tls");
        createSecureContext({ cert: next.tls.cert, key: next.tls.key });
        // NOTE: Bun cannot swap a listener's certificate, so the listener is replaced.
        // Connections that arrive between the close and the new bind are refused;
        // connections already accepted keep going.
        listener.stop(false);
        listener = listen({ ...next, listen: { hostname: previous.listen.hostname, port: bound.port } });
      }
      if (next.upstreamOrigin !== previous.upstreamOrigin) {
        const old = pool;
        pool = new UpstreamPool(upstreamAddress(next.upstreamOrigin));
        old.stop();
      }
      config = next;
      state = buildState(next, logger, metrics, pool);
      if (listenChanged) {
        logger.warn(
          { listen: `${bound.hostname}:${bound.port}`, requested: `${next.listen.hostname}:${next.listen.port}` },
          "listen address changes take effect after a restart",
        );
      }
      logger.info({ ...startupFields(next, state.gate, address()), new_listener: tlsChanged }, "configuration reloaded");
    },
    async shutdown() {
      const grace = config.shutdownGraceMs;
      (host as { closing: boolean }).closing = true;
      listener.stop(false);
      for (const connection of connections) if (connection.idle) connection.close();
      closeTunnels(tunnels, "server shutting down");
      const idle = new Promise<boolean>((resolve) => {
        if (requestsInFlight === 0) resolve(true);
        else onIdle = () => resolve(true);
      });
      const finished = await Promise.race([idle, Bun.sleep(grace).then(() => false)]);
      if (!finished) {
        logger.warn({ grace_seconds: grace / 1000 }, "requests still in flight after the grace period");
      }
      for (const connection of connections) connection.wire.destroy();
      destroyTunnels(tunnels);
      clearInterval(sweeper);
      pool.stop();
      rejections.stop();
    },
  };
}

/** Builds the audit trail logged at start-up and after a reload. */
function startupFields(config: Config, gate: Gate, address: { hostname: string; port: number }): Record<string, unknown> {
  return {
    listen: `${address.hostname}:${address.port}`,
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
  // The saml group's route has no service name; the openid and oauth routes do.
  if (config.groups.some((group) => group !== "saml") && config.ssoServices.length === 0) {
    weakening.push("SSO routes accept any service name (no --sso-services)");
  }
  if (config.trustedProxies.length > 0) weakening.push("--trusted-proxy");
  return weakening;
}
