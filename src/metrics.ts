// Prometheus metrics. The request path only adds to plain numbers, and the prom-client
// metrics copy them in their collect() callbacks when the registry is scraped, because a
// label-bound prom-client child hashes its labels again on every call. bench/metrics.md
// records both costs as measured by bench/metrics.ts. prom-client is loaded at the first
// scrape, so a gate without the admin listener does not carry its 16 MB.
import type { Metric, Registry } from "prom-client";
import type { Decision } from "./gate.ts";
import type { RejectReason } from "./secrets.ts";

export type UpstreamErrorKind = "unreachable" | "timeout" | "cut-off";

export interface Metrics {
  /** Counts one decided request: outcome allowed|whitelisted|rejected, reason for rejections, and the secret label for allowed ones. */
  countDecision(decision: Decision): void;
  /** Creates the accepted-requests series of these secret labels at 0. Other labels appear on first use. */
  addSecretLabels(labels: readonly string[]): void;
  countUpstreamError(kind: UpstreamErrorKind): void;
  /** Seconds from the request's arrival to the response headers. */
  observeLatency(seconds: number): void;
  websocketOpened(): void;
  websocketClosed(): void;
  /** Body bytes and WebSocket bytes (frame headers and handshake included): "in" from clients, "out" to clients. */
  countBytes(direction: "in" | "out", bytes: number): void;
  /** Counts a response the gate wrote itself instead of Mattermost's, by status. */
  countOwnResponse(status: number): void;
  /** Prometheus text exposition. */
  render(): Promise<string>;
  readonly contentType: string;
}

export const METRIC_PREFIX = "preauth_gate_";

/**
 * Upper bounds of the latency buckets in seconds, from a small static file to a large
 * upload. Slower responses, up to the upstream timeout, count only in `+Inf`.
 */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

const REJECT_REASONS: readonly RejectReason[] = ["missing", "wrong", "duplicated", "expired"];
const UPSTREAM_ERROR_KINDS: readonly UpstreamErrorKind[] = ["unreachable", "timeout", "cut-off"];

/**
 * The request duration histogram, shaped as prom-client's Registry reads a metric:
 * name, help, type and get(). prom-client's own Histogram hashes and validates its labels
 * in every observe(). NOTE: the Registry of prom-client 15.1.3 reads only these members,
 * but this shape is not part of its documented API. The histogram test in
 * test/metrics.test.ts fails if an upgrade changes it.
 */
class LatencyHistogram {
  readonly name = `${METRIC_PREFIX}request_duration_seconds`;
  readonly help = "Time from a request's arrival to its response headers, in seconds.";
  readonly type = "histogram";
  readonly aggregator = "sum";
  /** Observations per bucket, not cumulative. The last entry counts those above the largest bound. */
  private readonly bucketCounts = new Float64Array(LATENCY_BUCKETS.length + 1);
  private sum = 0;
  private count = 0;

  observe(seconds: number): void {
    // A negative, NaN or infinite duration is a caller bug. Dropping it keeps the sum
    // usable and, unlike a throw, cannot fail the request.
    if (!(seconds >= 0 && seconds < Infinity)) return;
    // Most responses fall in the low buckets, so a linear scan from the bottom is short.
    let index = 0;
    while (index < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[index]!) index++;
    this.bucketCounts[index]! += 1;
    this.sum += seconds;
    this.count += 1;
  }

  async get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    let cumulative = 0;
    for (let index = 0; index < LATENCY_BUCKETS.length; index++) {
      cumulative += this.bucketCounts[index]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: LATENCY_BUCKETS[index]! }, value: cumulative });
    }
    values.push({ metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Called by Registry.resetMetrics(). */
  reset(): void {
    this.bucketCounts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

type CounterSample = readonly [Record<string, string>, number];
type PromClient = typeof import("prom-client");

/** The text exposition format 0.0.4, as prom-client's default registry serves it. */
const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Registers a counter that copies `samples()` at each scrape. A sample at 0 is exposed
 * too, so that rate() and increase() include the first increment.
 */
function addCounter(
  prom: PromClient,
  register: Registry,
  name: string,
  labelNames: string[],
  help: string,
  samples: () => CounterSample[],
) {
  new prom.Counter({
    name: `${METRIC_PREFIX}${name}`,
    help,
    labelNames,
    registers: [register],
    collect() {
      this.reset();
      for (const [labels, value] of samples()) this.inc(labels, value);
    },
  });
}

/**
 * Default metrics left out. Under Bun 1.4.5 they report only old_space, and the
 * v8.getHeapSpaceStatistics() call behind them blocks every scrape for milliseconds,
 * more as the heap grows (bench/metrics.md). nodejs_heap_size_*_bytes still report the heap.
 */
const EXCLUDED_DEFAULT_METRICS = ["total", "used", "available"].map((kind) => `${METRIC_PREFIX}nodejs_heap_space_size_${kind}_bytes`);

/**
 * Creates the metrics on a registry of their own, with prom-client's default process
 * metrics. NOTE: under Bun 1.4.5 the nodejs_active_handles, _requests and _resources
 * metrics stay at 0 and nodejs_gc_duration_seconds has no samples, because Bun reports
 * neither handles nor garbage collections to them.
 */
export function createMetrics(): Metrics {
  // The numbers the request path adds to.
  let whitelisted = 0;
  let allowed = 0;
  const rejected: Record<RejectReason, number> = { missing: 0, wrong: 0, duplicated: 0, expired: 0 };
  const acceptedBySecret = new Map<string, { count: number }>();
  const upstreamErrors: Record<UpstreamErrorKind, number> = { unreachable: 0, timeout: 0, "cut-off": 0 };
  const bytes = { in: 0, out: 0 };
  const ownResponses = new Map<number, number>();
  let openWebSockets = 0;

  const latency = new LatencyHistogram();

  /** Builds the registry over the plain numbers; runs once, at the first scrape. */
  async function buildRegistry(): Promise<Registry> {
    const prom: PromClient = await import("prom-client");
    const register = new prom.Registry();
    prom.collectDefaultMetrics({ register, prefix: METRIC_PREFIX });
    for (const name of EXCLUDED_DEFAULT_METRICS) register.removeSingleMetric(name);
    addCounter(prom, register, "requests_total", ["outcome", "reason"], "Requests decided by the gate, by outcome, and by reason for rejected ones.", () => [
      [{ outcome: "whitelisted", reason: "" }, whitelisted],
      [{ outcome: "allowed", reason: "" }, allowed],
      ...REJECT_REASONS.map((reason): CounterSample => [{ outcome: "rejected", reason }, rejected[reason]]),
    ]);
    addCounter(prom, register, "accepted_requests_total", ["secret"], "Requests allowed by a secret, by the secret's label.", () =>
      [...acceptedBySecret].map(([secret, slot]): CounterSample => [{ secret }, slot.count]),
    );
    addCounter(prom, register, "upstream_errors_total", ["kind"], "Failed upstream requests: unreachable, timeout or cut-off body.", () =>
      UPSTREAM_ERROR_KINDS.map((kind): CounterSample => [{ kind }, upstreamErrors[kind]]),
    );
    addCounter(prom, register, "own_responses_total", ["status"], "Responses the gate sent itself instead of Mattermost's, by status: 403 rejections, 4xx for refused requests, 5xx for upstream failures.", () =>
      [...ownResponses].map(([status, count]): CounterSample => [{ status: String(status) }, count]),
    );
    addCounter(prom, register, "bytes_total", ["direction"], "Body bytes and WebSocket bytes, frame headers included: in from clients, out to clients.", () => [
      [{ direction: "in" }, bytes.in],
      [{ direction: "out" }, bytes.out],
    ]);
    new prom.Gauge({
      name: `${METRIC_PREFIX}websocket_connections`,
      help: "Open WebSocket connections bridged to the upstream.",
      registers: [register],
      collect() {
        this.set(openWebSockets);
      },
    });
    register.registerMetric(latency as unknown as Metric);
    return register;
  }
  let registry: Promise<Registry> | null = null;

  function secretSlot(label: string): { count: number } {
    let slot = acceptedBySecret.get(label);
    if (slot === undefined) {
      slot = { count: 0 };
      acceptedBySecret.set(label, slot);
    }
    return slot;
  }

  return {
    countDecision(decision) {
      if (decision.outcome === "whitelisted") {
        whitelisted++;
      } else if (decision.outcome === "allowed") {
        allowed++;
        secretSlot(decision.label).count++;
      } else {
        rejected[decision.reason]++;
      }
    },
    addSecretLabels(labels) {
      for (const label of labels) secretSlot(label);
    },
    countUpstreamError(kind) {
      upstreamErrors[kind]++;
    },
    observeLatency(seconds) {
      latency.observe(seconds);
    },
    websocketOpened() {
      openWebSockets++;
    },
    websocketClosed() {
      openWebSockets--;
    },
    countOwnResponse(status) {
      ownResponses.set(status, (ownResponses.get(status) ?? 0) + 1);
    },
    countBytes(direction, count) {
      if (count > 0) bytes[direction] += count;
    },
    render: async () => (await (registry ??= buildRegistry())).metrics(),
    contentType: PROMETHEUS_CONTENT_TYPE,
  };
}
