// The gate's Prometheus metrics, scraped over a real socket from the admin listener.
import { afterEach, describe, expect, test } from "bun:test";
import { startAdminServer } from "../src/admin.ts";
import { createGate } from "../src/gate.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics, LATENCY_BUCKETS, type Metrics } from "../src/metrics.ts";
import type { SecretEntry } from "../src/secrets.ts";

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** One scrape: samples keyed by `name{labels}` as printed, and the HELP and TYPE lines. */
interface Exposition {
  readonly text: string;
  readonly samples: Map<string, number>;
  readonly help: Map<string, string>;
  readonly types: Map<string, string>;
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$/;

/** Parses a sample value, and fails the test on one that Prometheus would reject. */
function parseSampleValue(raw: string, line: string): number {
  // prom-client 15.1.3 writes NaN as "Nan". Prometheus parses values with Go's
  // strconv.ParseFloat, which accepts NaN in any letter case.
  if (/^nan$/i.test(raw)) return NaN;
  if (raw === "+Inf") return Infinity;
  if (raw === "-Inf") return -Infinity;
  const value = Number(raw);
  expect(Number.isNaN(value), `value is not a number: ${line}`).toBe(false);
  return value;
}

/** Parses the text format, and fails the test on a line that is not HELP, TYPE or a sample. */
function parseExposition(text: string): Exposition {
  const samples = new Map<string, number>();
  const help = new Map<string, string>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment !== null) {
      (comment[1] === "HELP" ? help : types).set(comment[2]!, comment[3]!);
      continue;
    }
    const sample = SAMPLE_LINE.exec(line);
    expect(sample, `line is not a valid sample: ${line}`).not.toBeNull();
    samples.set(`${sample![1]}${sample![2] ?? ""}`, parseSampleValue(sample![3]!, line));
  }
  return { text, samples, help, types };
}

/** Starts an admin listener on 127.0.0.1 for fresh metrics and returns a scrape function. */
function serveMetrics(): { metrics: Metrics; scrape: () => Promise<Exposition> } {
  const metrics = createMetrics();
  const logger = createLogger("silent");
  const admin = startAdminServer({ hostname: "127.0.0.1", port: 0, metrics, upstreamOrigin: () => "http://127.0.0.1:1", logger });
  stops.push(() => admin.stop());
  return {
    metrics,
    async scrape() {
      const response = await fetch(`${admin.url}/metrics`);
      expect(response.status).toBe(200);
      return parseExposition(await response.text());
    },
  };
}

const REQUESTS = "preauth_gate_requests_total";
const request = (outcome: string, reason = "") => `${REQUESTS}{outcome="${outcome}",reason="${reason}"}`;

describe("metrics exposition", () => {
  test("fixed series exist at 0", async () => {
    const { samples } = await serveMetrics().scrape();
    for (const key of [
      request("whitelisted"),
      request("allowed"),
      ...["missing", "wrong", "duplicated", "expired"].map((reason) => request("rejected", reason)),
      ...["unreachable", "timeout", "cut-off"].map((kind) => `preauth_gate_upstream_errors_total{kind="${kind}"}`),
      'preauth_gate_bytes_total{direction="in"}',
      'preauth_gate_bytes_total{direction="out"}',
      "preauth_gate_websocket_connections",
      "preauth_gate_request_duration_seconds_count",
    ]) {
      expect(samples.get(key), key).toBe(0);
    }
  });

  test("every family has HELP and TYPE", async () => {
    const { samples, help, types } = await serveMetrics().scrape();
    for (const key of samples.keys()) {
      const name = key.replace(/\{.*$/, "");
      const family = help.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
      expect(help.has(family), `HELP for ${family}`).toBe(true);
      expect(types.has(family), `TYPE for ${family}`).toBe(true);
    }
    expect(types.get(REQUESTS)).toBe("counter");
    expect(types.get("preauth_gate_accepted_requests_total")).toBe("counter");
    expect(types.get("preauth_gate_upstream_errors_total")).toBe("counter");
    expect(types.get("preauth_gate_bytes_total")).toBe("counter");
    expect(types.get("preauth_gate_websocket_connections")).toBe("gauge");
    expect(types.get("preauth_gate_request_duration_seconds")).toBe("histogram");
    expect(types.get("preauth_gate_process_cpu_seconds_total")).toBe("counter");
  });

  test("heap space metrics are left out", async () => {
    const { types } = await serveMetrics().scrape();
    expect(types.has("preauth_gate_nodejs_heap_space_size_total_bytes")).toBe(false);
    expect(types.has("preauth_gate_nodejs_heap_size_used_bytes")).toBe(true);
  });
});

describe("metrics counting", () => {
  test("requests counted per outcome and reason", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.countDecision({ outcome: "whitelisted", rule: "static" });
    metrics.countDecision({ outcome: "whitelisted", rule: "config-client" });
    for (let count = 0; count < 3; count++) metrics.countDecision({ outcome: "allowed", label: "main" });
    metrics.countDecision({ outcome: "rejected", reason: "missing" });
    metrics.countDecision({ outcome: "rejected", reason: "wrong" });
    metrics.countDecision({ outcome: "rejected", reason: "wrong" });
    metrics.countDecision({ outcome: "rejected", reason: "duplicated" });
    metrics.countDecision({ outcome: "rejected", reason: "expired" });
    const { samples } = await scrape();
    expect(samples.get(request("whitelisted"))).toBe(2);
    expect(samples.get(request("allowed"))).toBe(3);
    expect(samples.get(request("rejected", "missing"))).toBe(1);
    expect(samples.get(request("rejected", "wrong"))).toBe(2);
    expect(samples.get(request("rejected", "duplicated"))).toBe(1);
    expect(samples.get(request("rejected", "expired"))).toBe(1);
  });

  test("accepted requests labelled per secret", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.addSecretLabels(["2026-q4", "2026-q3"]);
    const before = await scrape();
    expect(before.samples.get('preauth_gate_accepted_requests_total{secret="2026-q4"}')).toBe(0);
    expect(before.samples.get('preauth_gate_accepted_requests_total{secret="2026-q3"}')).toBe(0);
    metrics.countDecision({ outcome: "allowed", label: "2026-q4" });
    metrics.countDecision({ outcome: "allowed", label: "2026-q4" });
    metrics.countDecision({ outcome: "allowed", label: "env" });
    metrics.countDecision({ outcome: "allowed", label: 'odd "label" \\ x' });
    const { samples } = await scrape();
    expect(samples.get('preauth_gate_accepted_requests_total{secret="2026-q4"}')).toBe(2);
    expect(samples.get('preauth_gate_accepted_requests_total{secret="2026-q3"}')).toBe(0);
    expect(samples.get('preauth_gate_accepted_requests_total{secret="env"}')).toBe(1);
    expect(samples.get('preauth_gate_accepted_requests_total{secret="odd \\"label\\" \\\\ x"}')).toBe(1);
  });

  test("latency histogram counts, buckets and sum", async () => {
    const { metrics, scrape } = serveMetrics();
    for (const seconds of [0.0003, 0.001, 0.003, 0.2, 120]) metrics.observeLatency(seconds);
    // Dropped: a duration that is negative, NaN or infinite.
    for (const seconds of [-1, NaN, Infinity]) metrics.observeLatency(seconds);
    const { samples } = await scrape();
    const bucket = (le: string) => samples.get(`preauth_gate_request_duration_seconds_bucket{le="${le}"}`);
    expect(samples.get("preauth_gate_request_duration_seconds_count")).toBe(5);
    expect(samples.get("preauth_gate_request_duration_seconds_sum")).toBeCloseTo(120.2043, 9);
    expect(bucket("0.0005")).toBe(1);
    expect(bucket("0.001")).toBe(2);
    expect(bucket("0.005")).toBe(3);
    expect(bucket("0.25")).toBe(4);
    expect(bucket("60")).toBe(4);
    expect(bucket("+Inf")).toBe(5);
    const bounds = [...samples.keys()].filter((key) => key.startsWith("preauth_gate_request_duration_seconds_bucket"));
    expect(bounds).toHaveLength(LATENCY_BUCKETS.length + 1);
  });

  test("websocket gauge goes up and down", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.websocketOpened();
    metrics.websocketOpened();
    metrics.websocketOpened();
    expect((await scrape()).samples.get("preauth_gate_websocket_connections")).toBe(3);
    metrics.websocketClosed();
    metrics.websocketClosed();
    expect((await scrape()).samples.get("preauth_gate_websocket_connections")).toBe(1);
  });

  test("bytes counted per direction", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.countBytes("in", 1000);
    metrics.countBytes("in", 24);
    metrics.countBytes("out", 5_000_000);
    metrics.countBytes("out", 0);
    metrics.countBytes("out", -3);
    const { samples } = await scrape();
    expect(samples.get('preauth_gate_bytes_total{direction="in"}')).toBe(1024);
    expect(samples.get('preauth_gate_bytes_total{direction="out"}')).toBe(5_000_000);
  });

  test("own responses counted per status", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.countOwnResponse(403);
    metrics.countOwnResponse(403);
    metrics.countOwnResponse(431);
    const { samples } = await scrape();
    expect(samples.get('preauth_gate_own_responses_total{status="403"}')).toBe(2);
    expect(samples.get('preauth_gate_own_responses_total{status="431"}')).toBe(1);
    expect(samples.has('preauth_gate_own_responses_total{status="502"}')).toBe(false);
  });

  test("upstream errors counted per kind", async () => {
    const { metrics, scrape } = serveMetrics();
    metrics.countUpstreamError("unreachable");
    metrics.countUpstreamError("timeout");
    metrics.countUpstreamError("timeout");
    const { samples } = await scrape();
    expect(samples.get('preauth_gate_upstream_errors_total{kind="unreachable"}')).toBe(1);
    expect(samples.get('preauth_gate_upstream_errors_total{kind="timeout"}')).toBe(2);
    expect(samples.get('preauth_gate_upstream_errors_total{kind="cut-off"}')).toBe(0);
  });

  test("secret values never appear", async () => {
    const current = "current-secret-VALUE-3f9a2c71";
    const expired = "expired-secret-VALUE-8b1d44e0";
    const wrong = "presented-wrong-VALUE-0c7e19";
    const secrets: SecretEntry[] = [
      { label: "current", value: current, expiresAt: null },
      { label: "old", value: expired, expiresAt: new Date(0) },
    ];
    const gate = createGate({ secrets, groups: [], ssoServices: [], websocketExempt: false });
    const { metrics, scrape } = serveMetrics();
    metrics.addSecretLabels(secrets.map((secret) => secret.label));
    for (const presented of [current, expired, wrong, `${current}, ${current}`, null]) {
      metrics.countDecision(gate.decide("/api/v4/users/me", presented, false));
    }
    const { text, samples } = await scrape();
    expect(samples.get('preauth_gate_accepted_requests_total{secret="current"}')).toBe(1);
    expect(samples.get(request("rejected", "expired"))).toBe(1);
    for (const value of [current, expired, wrong]) expect(text).not.toContain(value);
  });
});
