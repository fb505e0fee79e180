// The admin listener: liveness, readiness and Prometheus metrics on an address of their
// own, so that none of them is reachable through the gate. It is off unless started.
import { Hono } from "hono";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

export interface AdminOptions {
  readonly hostname: string;
  readonly port: number;
  readonly metrics: Metrics;
  /** Current upstream origin (it can change on reload), e.g. "http://127.0.0.1:8065". */
  readonly upstreamOrigin: () => string;
  readonly logger: Logger;
}

export interface AdminServer {
  /** Origin of the listener, e.g. "http://127.0.0.1:9066". */
  readonly url: string;
  readonly port: number;
  /** Closes the listener and its open connections. */
  stop(): Promise<void>;
}

/** The Mattermost route that /readyz requests from the upstream. */
export const READINESS_PATH = "/api/v4/system/ping";
export const READINESS_TIMEOUT_MS = 2000;
/** Minimum time between two warnings about a failed readiness check. */
export const READINESS_WARNING_INTERVAL_MS = 30_000;

type Readiness =
  | { readonly ready: true; readonly status: number }
  | { readonly ready: false; readonly reason: string; readonly error?: string };

/**
 * Requests the readiness route from the upstream with no client data: fixed headers, no
 * body, no redirect followed. Any status below 500, 401 and 403 included, means that
 * Mattermost is serving.
 */
async function probeUpstream(origin: string): Promise<Readiness> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), READINESS_TIMEOUT_MS);
  try {
    const response = await fetch(`${origin}${READINESS_PATH}`, {
      headers: { accept: "application/json", "user-agent": "preauth-gate-readiness" },
      redirect: "manual",
      signal: controller.signal,
    });
    // Only the status matters. Cancelling the body also ends a body that never finishes.
    response.body?.cancel().catch(() => undefined);
    if (response.status < 500) return { ready: true, status: response.status };
    return { ready: false, reason: `upstream answered status ${response.status}` };
  } catch (error) {
    if (controller.signal.aborted) {
      return { ready: false, reason: `upstream timed out after ${READINESS_TIMEOUT_MS / 1000} s` };
    }
    const code = (error as { code?: string }).code ?? (error as Error).name;
    return { ready: false, reason: "upstream unreachable", error: code };
  } finally {
    clearTimeout(timer);
  }
}

/** Builds the admin routes. startAdminServer serves them on a listener of their own. */
export function createAdminApp(options: Omit<AdminOptions, "hostname" | "port">): Hono {
  const { metrics, upstreamOrigin, logger } = options;
  const app = new Hono();

  // Concurrent /readyz requests share one probe, so that a burst of them cannot become
  // a burst of requests to Mattermost.
  let probeInFlight: Promise<Readiness> | null = null;
  function checkReadiness(): Promise<Readiness> {
    if (probeInFlight === null) {
      probeInFlight = probeUpstream(upstreamOrigin()).finally(() => {
        probeInFlight = null;
      });
    }
    return probeInFlight;
  }

  let lastWarningAt = -Infinity;
  let suppressedWarnings = 0;
  function warnNotReady(readiness: Extract<Readiness, { ready: false }>): void {
    const now = performance.now();
    if (now - lastWarningAt < READINESS_WARNING_INTERVAL_MS) {
      suppressedWarnings++;
      return;
    }
    logger.warn(
      { upstream: upstreamOrigin(), reason: readiness.reason, error: readiness.error, suppressed_warnings: suppressedWarnings },
      "readiness check failed",
    );
    lastWarningAt = now;
    suppressedWarnings = 0;
  }

  app.use(async (c, next) => {
    c.header("cache-control", "no-store");
    await next();
    logger.debug({ method: c.req.method, path: c.req.path, status: c.res.status }, "admin request");
  });

  app.get("/healthz", (c) => c.text("ok"));

  app.get("/readyz", async (c) => {
    const readiness = await checkReadiness();
    if (readiness.ready) return c.text("ready");
    warnNotReady(readiness);
    return c.text(`not ready: ${readiness.reason}`, 503);
  });

  app.get("/metrics", async (c) => c.body(await metrics.render(), 200, { "content-type": metrics.contentType }));

  app.notFound((c) => c.text("Not Found", 404));

  app.onError((error, c) => {
    logger.error({ path: c.req.path, error: error.name }, "admin request failed");
    return c.text("Internal Server Error", 500);
  });

  return app;
}

/**
 * Starts the admin listener, or throws Bun.serve's error when the address cannot be
 * bound. Hono serves HEAD for every GET route with the GET response's status and headers.
 */
export function startAdminServer(options: AdminOptions): AdminServer {
  const app = createAdminApp(options);
  const server = Bun.serve({ hostname: options.hostname, port: options.port, fetch: app.fetch });
  const port = server.port ?? options.port;
  options.logger.debug({ listen: server.url.host }, "admin server started");
  return {
    url: server.url.origin,
    port,
    async stop() {
      // Open connections are closed too, so a readiness probe cannot delay a shutdown.
      await server.stop(true);
      options.logger.debug({}, "admin server stopped");
    },
  };
}
