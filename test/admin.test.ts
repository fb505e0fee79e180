// The admin listener over real sockets on 127.0.0.1, in front of small upstreams that
// record what they received.
import { afterEach, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { READINESS_PATH, startAdminServer, type AdminServer } from "../src/admin.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics, type Metrics } from "../src/metrics.ts";

interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: Headers;
}

interface Upstream {
  readonly origin: string;
  readonly received: Received[];
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Starts an upstream whose `answer` runs for every request after it is recorded. */
function startUpstream(answer: (request: Request) => Response | Promise<Response>): Upstream {
  const received: Received[] = [];
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request) {
      received.push({ method: request.method, url: request.url, headers: request.headers });
      return answer(request);
    },
  });
  cleanups.push(() => server.stop(true));
  return { origin: `http://127.0.0.1:${server.port}`, received };
}

/** Returns a port on 127.0.0.1 on which nothing listens. */
async function closedPort(): Promise<number> {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = server.port!;
  await server.stop(true);
  return port;
}

interface Admin {
  readonly admin: AdminServer;
  readonly metrics: Metrics;
  /** Parsed log lines. */
  readonly logs: { level: string; msg: string; [field: string]: unknown }[];
}

function startAdmin(upstreamOrigin: () => string): Admin {
  const logs: Admin["logs"] = [];
  const logger = createLogger("debug", (line) => logs.push(JSON.parse(line)));
  const metrics = createMetrics();
  const admin = startAdminServer({ hostname: "127.0.0.1", port: 0, metrics, upstreamOrigin, logger });
  cleanups.push(() => admin.stop());
  return { admin, metrics, logs };
}

describe("healthz", () => {
  test("healthz returns 200 ok", async () => {
    const { admin } = startAdmin(() => "http://127.0.0.1:1");
    const response = await fetch(`${admin.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("ok");
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  test("admin requests log at debug", async () => {
    const { admin, logs } = startAdmin(() => "http://127.0.0.1:1");
    await fetch(`${admin.url}/healthz?probe=1`);
    const requestLines = logs.filter((line) => line.msg === "admin request");
    expect(requestLines).toHaveLength(1);
    expect(requestLines[0]!.level).toBe("debug");
    expect(requestLines[0]!.path).toBe("/healthz");
    expect(requestLines[0]!.status).toBe(200);
    expect(logs.filter((line) => line.level !== "debug")).toHaveLength(0);
  });

  test("healthz does not contact the upstream", async () => {
    const upstream = startUpstream(() => new Response("{}"));
    const { admin } = startAdmin(() => upstream.origin);
    await fetch(`${admin.url}/healthz`);
    expect(upstream.received).toHaveLength(0);
  });
});

describe("readyz", () => {
  test("readyz is ready with a live upstream", async () => {
    const upstream = startUpstream(() => Response.json({ status: "OK" }));
    const { admin } = startAdmin(() => upstream.origin);
    const response = await fetch(`${admin.url}/readyz`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("ready");
    expect(upstream.received).toHaveLength(1);
    expect(upstream.received[0]!.method).toBe("GET");
    expect(new URL(upstream.received[0]!.url).pathname).toBe(READINESS_PATH);
  });

  const statusCases: [upstreamStatus: number, readyzStatus: number][] = [
    [200, 200],
    [302, 200],
    [403, 200],
    [404, 200],
    [499, 200],
    [500, 503],
    [502, 503],
    [503, 503],
  ];
  for (const [upstreamStatus, readyzStatus] of statusCases) {
    test(`readyz maps upstream ${upstreamStatus} to ${readyzStatus}`, async () => {
      const upstream = startUpstream(() => new Response("x", { status: upstreamStatus, headers: { location: "/x" } }));
      const { admin } = startAdmin(() => upstream.origin);
      const response = await fetch(`${admin.url}/readyz`);
      expect(response.status).toBe(readyzStatus);
      if (readyzStatus === 503) expect(await response.text()).toBe(`not ready: upstream answered status ${upstreamStatus}`);
    });
  }

  test("readyz does not follow redirects", async () => {
    const target = startUpstream(() => new Response("elsewhere"));
    const upstream = startUpstream(() => Response.redirect(`${target.origin}/elsewhere`, 302));
    const { admin } = startAdmin(() => upstream.origin);
    const response = await fetch(`${admin.url}/readyz`);
    expect(response.status).toBe(200);
    expect(upstream.received).toHaveLength(1);
    expect(target.received).toHaveLength(0);
  });

  test("readyz sends nothing from the client", async () => {
    const upstream = startUpstream(() => new Response("{}"));
    const { admin } = startAdmin(() => upstream.origin);
    await fetch(`${admin.url}/readyz?token=abc`, {
      headers: {
        cookie: "MMAUTHTOKEN=session-cookie",
        authorization: "Bearer client-token",
        "x-mattermost-preauth-secret": "client-presented-secret",
        "x-forwarded-for": "203.0.113.9",
      },
    });
    const received = upstream.received[0]!;
    expect(new URL(received.url).search).toBe("");
    for (const name of ["cookie", "authorization", "x-mattermost-preauth-secret", "x-forwarded-for"]) {
      expect(received.headers.get(name)).toBeNull();
    }
  });

  test("readyz fails fast on a closed port", async () => {
    const port = await closedPort();
    const { admin } = startAdmin(() => `http://127.0.0.1:${port}`);
    const started = performance.now();
    const response = await fetch(`${admin.url}/readyz`);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(response.status).toBe(503);
    expect(await response.text()).toBe("not ready: upstream unreachable");
  });

  test("readyz times out on a hanging upstream", async () => {
    const upstream = startUpstream(() => new Promise<Response>(() => {}));
    const { admin } = startAdmin(() => upstream.origin);
    const started = performance.now();
    const response = await fetch(`${admin.url}/readyz`);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(1900);
    expect(elapsed).toBeLessThan(4000);
    expect(response.status).toBe(503);
    expect(await response.text()).toBe("not ready: upstream timed out after 2 s");
  });

  test("readyz warns at most once per 30 s", async () => {
    const port = await closedPort();
    const { admin, logs } = startAdmin(() => `http://127.0.0.1:${port}`);
    for (let attempt = 0; attempt < 3; attempt++) expect((await fetch(`${admin.url}/readyz`)).status).toBe(503);
    const warnings = logs.filter((line) => line.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toBe("readiness check failed");
    expect(warnings[0]!.reason).toBe("upstream unreachable");
    expect(warnings[0]!.error).toBe("ECONNREFUSED");
    expect(warnings[0]!.upstream).toBe(`http://127.0.0.1:${port}`);
    expect(warnings[0]!.suppressed_warnings).toBe(0);
  });

  test("concurrent readyz share one probe", async () => {
    const upstream = startUpstream(async () => {
      await Bun.sleep(200);
      return new Response("{}");
    });
    const { admin } = startAdmin(() => upstream.origin);
    const responses = await Promise.all(Array.from({ length: 5 }, () => fetch(`${admin.url}/readyz`)));
    for (const response of responses) expect(response.status).toBe(200);
    expect(upstream.received).toHaveLength(1);
  });

  test("readyz reads the upstream origin per probe", async () => {
    const first = startUpstream(() => new Response("{}"));
    const second = startUpstream(() => new Response("{}"));
    let origin = first.origin;
    const { admin } = startAdmin(() => origin);
    await fetch(`${admin.url}/readyz`);
    origin = second.origin;
    await fetch(`${admin.url}/readyz`);
    expect(first.received).toHaveLength(1);
    expect(second.received).toHaveLength(1);
  });
});

describe("metrics endpoint", () => {
  test("metrics uses the Prometheus text format", async () => {
    const { admin, metrics } = startAdmin(() => "http://127.0.0.1:1");
    metrics.countDecision({ outcome: "rejected", reason: "missing" });
    const response = await fetch(`${admin.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const body = await response.text();
    expect(body).toContain("# TYPE preauth_gate_requests_total counter\n");
    expect(body).toContain('preauth_gate_requests_total{outcome="rejected",reason="missing"} 1\n');
    expect(body).toContain("preauth_gate_process_cpu_seconds_total ");
  });
});

describe("routing", () => {
  test("HEAD answers like GET without a body", async () => {
    const upstream = startUpstream(() => new Response("{}"));
    const { admin } = startAdmin(() => upstream.origin);
    for (const path of ["/healthz", "/readyz", "/metrics"]) {
      const response = await fetch(`${admin.url}${path}`, { method: "HEAD" });
      expect(response.status).toBe(200);
      expect(await response.text()).toBe("");
    }
  });

  const notFound: [method: string, path: string][] = [
    ["GET", "/"],
    ["GET", "/healthz/"],
    ["GET", "/HEALTHZ"],
    ["GET", "/metrics/x"],
    ["GET", "/api/v4/system/ping"],
    ["POST", "/healthz"],
    ["DELETE", "/metrics"],
  ];
  for (const [method, path] of notFound) {
    test(`${method} ${path} gets 404`, async () => {
      const { admin } = startAdmin(() => "http://127.0.0.1:1");
      const response = await fetch(`${admin.url}${path}`, { method });
      expect(response.status).toBe(404);
      expect(await response.text()).toBe("Not Found");
    });
  }

  test("stop closes the listener", async () => {
    const { admin } = startAdmin(() => "http://127.0.0.1:1");
    await admin.stop();
    await expect(fetch(`${admin.url}/healthz`)).rejects.toThrow();
  });
});
