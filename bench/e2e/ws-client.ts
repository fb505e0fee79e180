// WebSocket load client, run in a child Bun process per measurement. It opens many
// connections with the secret header and a matching Origin, then every connection sends
// a message, waits for the echo and sends the next one (a closed loop) for a fixed time.
//
//   bun bench/e2e/ws-client.ts '{"url":"ws://127.0.0.1:8066/api/v4/websocket",...}'
//
// Prints one JSON line (WebSocketLoadResult). With every connection in flight at once,
// the round-trip time is about connections / (messages per second), by Little's law.

export interface WebSocketLoadSpec {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly messageBytes: number;
  /** Handshakes in flight at once while opening the connections. */
  readonly openConcurrency: number;
}

export interface WebSocketLoadResult {
  readonly opened: number;
  readonly failedToOpen: number;
  readonly openSeconds: number;
  readonly messages: number;
  readonly messagesPerSecond: number;
  readonly roundTripMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Connections that closed before the client closed them. */
  readonly closedEarly: number;
  readonly mismatchedEchoes: number;
}

const OPEN_TIMEOUT_MS = 15_000;
const DRAIN_TIMEOUT_MS = 3_000;

/** Builds a Mattermost-style event of about `bytes` characters. */
function messageOf(bytes: number): string {
  const prefix = '{"action":"user_typing","seq":1,"data":{"channel_id":"k3m9qz7xw1fbtrp8ds5yhn4cja","pad":"';
  const suffix = '"}}';
  return prefix + "x".repeat(Math.max(0, bytes - prefix.length - suffix.length)) + suffix;
}

function openOne(spec: WebSocketLoadSpec): Promise<WebSocket | null> {
  return new Promise((resolve) => {
    // Bun's WebSocket client takes request headers in a second-argument object.
    const socket = new WebSocket(spec.url, { headers: spec.headers } as unknown as string[]);
    const timer = setTimeout(() => {
      socket.close();
      resolve(null);
    }, OPEN_TIMEOUT_MS);
    socket.addEventListener("open", () => (clearTimeout(timer), resolve(socket)), { once: true });
    socket.addEventListener("error", () => (clearTimeout(timer), resolve(null)), { once: true });
    socket.addEventListener("close", () => (clearTimeout(timer), resolve(null)), { once: true });
  });
}

async function openAll(spec: WebSocketLoadSpec): Promise<{ sockets: WebSocket[]; failed: number }> {
  const sockets: WebSocket[] = [];
  let failed = 0;
  let started = 0;
  async function worker(): Promise<void> {
    while (started < spec.connections) {
      started++;
      const socket = await openOne(spec);
      if (socket === null) failed++;
      else sockets.push(socket);
    }
  }
  await Promise.all(Array.from({ length: spec.openConcurrency }, worker));
  return { sockets, failed };
}

function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
}

export async function runWebSocketLoad(spec: WebSocketLoadSpec): Promise<WebSocketLoadResult> {
  const openStart = performance.now();
  const { sockets, failed } = await openAll(spec);
  const openSeconds = (performance.now() - openStart) / 1000;

  const message = messageOf(spec.messageBytes);
  const sentAt = new Float64Array(sockets.length);
  let roundTrips = new Float64Array(1 << 16);
  let count = 0;
  let inFlight = 0;
  let running = true;
  let closedEarly = 0;
  let mismatchedEchoes = 0;
  let closing = false;

  sockets.forEach((socket, index) => {
    socket.addEventListener("message", (event) => {
      const now = performance.now();
      inFlight--;
      if (event.data !== message) mismatchedEchoes++;
      if (count === roundTrips.length) {
        const grown = new Float64Array(roundTrips.length * 2);
        grown.set(roundTrips);
        roundTrips = grown;
      }
      roundTrips[count++] = now - sentAt[index]!;
      if (running) {
        sentAt[index] = performance.now();
        inFlight++;
        socket.send(message);
      }
    });
    socket.addEventListener("close", () => {
      if (!closing) closedEarly++;
    });
  });

  const start = performance.now();
  sockets.forEach((socket, index) => {
    sentAt[index] = performance.now();
    inFlight++;
    socket.send(message);
  });
  await Bun.sleep(spec.durationSeconds * 1000);
  running = false;
  const elapsedSeconds = (performance.now() - start) / 1000;
  const completedInWindow = count;
  const drainDeadline = performance.now() + DRAIN_TIMEOUT_MS;
  while (inFlight > 0 && performance.now() < drainDeadline) await Bun.sleep(10);

  closing = true;
  for (const socket of sockets) socket.close(1000);
  await Bun.sleep(200);

  const sorted = roundTrips.slice(0, count).sort();
  return {
    opened: sockets.length,
    failedToOpen: failed,
    openSeconds,
    messages: completedInWindow,
    messagesPerSecond: completedInWindow / elapsedSeconds,
    roundTripMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? Number.NaN },
    closedEarly,
    mismatchedEchoes,
  };
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "") as WebSocketLoadSpec;
  console.log(JSON.stringify(await runWebSocketLoad(spec)));
  process.exit(0);
}
