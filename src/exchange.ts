// One HTTP request forwarded to Mattermost and its response relayed back. The gate writes
// both heads itself and moves bodies as they arrive, with backpressure each way: a full
// socket on one side stops reading on the other.
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { clientResponseHead, headerValue, upstreamRequestHead, type ClientInfo } from "./headers.ts";
import {
  ChunkedDecoder,
  encodeChunk,
  headEnd,
  LAST_CHUNK,
  MAX_HEAD_BYTES,
  parseResponseHead,
  type RequestHead,
  type ResponseHead,
} from "./http1.ts";
import { gateError, type FixedResponse } from "./responses.ts";
import { isForwardable, targetString, type RequestTarget } from "./target.ts";
import type { UpstreamConnection, UpstreamHandler, UpstreamPool } from "./upstream.ts";
import { HIGH_WATER_BYTES, type Wire } from "./wire.ts";

/** The client connection, as an exchange uses it. */
export interface ExchangeClient {
  readonly wire: Wire;
  /** The connection's progress count, to which the exchange adds Mattermost's reads. */
  progress: number;
  /** True once the gate is shutting down: responses then close the connection. */
  readonly closing: boolean;
  pauseReading(): void;
  resumeReading(): void;
  /** Sends one of the gate's own responses. With `close`, the connection ends after it. */
  sendFixed(response: FixedResponse, close: boolean, version: "1.0" | "1.1"): void;
  /** Ends the exchange. `reusable` is true when the connection can take another request. */
  exchangeDone(reusable: boolean): void;
}

export interface ForwardSettings {
  readonly pool: UpstreamPool;
  /** Host header for a request that has none (HTTP/1.0). */
  readonly upstreamHost: string;
  readonly upstreamTimeoutMs: number;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * Largest response body of declared length that is collected whole and sent with its head
 * in one write: fewer system calls, and a body cut off by Mattermost still becomes a 502.
 */
const SMALL_BODY_BYTES = 64 * 1024;
/** Request bytes kept for a retry after a reused upstream connection fails; more are not retried. */
const RETRY_BYTES = 64 * 1024;
/**
 * Requests that are not sent again after a failure skip reused connections idle longer
 * than this, in ms, so that they rarely meet one that Mattermost is closing.
 */
const FRESH_IDLE_MS = 2_000;
/**
 * Methods sent again on a new connection when a reused one closes before any response
 * byte. Only safe methods: Mattermost may have acted on anything else before closing.
 */
const RETRIED_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

/** Methods the gate never forwards: Mattermost serves neither, and TRACE echoes credentials. */
const REJECTED_METHODS: ReadonlySet<string> = new Set(["CONNECT", "TRACE"]);
const CONTINUE = Buffer.from("HTTP/1.1 100 Continue\r\n\r\n");

/** Checks the request before anything goes upstream, and returns the error response or null. */
export function requestProblem(head: RequestHead, target: RequestTarget, maxBodyBytes: number): FixedResponse | null {
  const { method, framing } = head;
  if (!isForwardable(target)) {
    return gateError(400, "Bad Request: the request target is not in canonical form", method);
  }
  if (REJECTED_METHODS.has(method)) {
    return gateError(405, `Method Not Allowed: ${method} is not forwarded`, method);
  }
  if (framing.kind === "length" && framing.length > maxBodyBytes) {
    return gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, method);
  }
  return null;
}

export class Exchange implements UpstreamHandler {
  private readonly method: string;
  private upstream: UpstreamConnection | null = null;
  private finished = false;
  private timer: ReturnType<typeof setTimeout> | null = null;

  // Request side.
  private requestDone: boolean;
  private bodyRemaining: number;
  private readonly bodyDecoder: ChunkedDecoder | null;
  private bodyBytes = 0;
  /** Encoded request bytes waiting for the upstream connection. */
  private waiting: Buffer[] | null = [];
  private waitingBytes = 0;
  /** Everything sent upstream so far while a retry is still possible, else null. */
  private sent: Buffer[] | null = [];
  private sentBytes = 0;
  private readonly requestHead: Buffer;
  /** Bytes to send again, head included, on the connection that replaces a failed one. */
  private replay: Buffer[] | null = null;

  // Response side.
  private responseBytesSeen = false;
  private partialHead: Buffer | null = null;
  private response: ResponseHead | null = null;
  private responseRemaining = 0;
  private responseDecoder: ChunkedDecoder | null = null;
  /** Body pieces of a small response, collected until it is complete. */
  private collected: Buffer[] | null = null;
  private collectedHead = "";
  private rechunk = false;
  private closeClient = false;
  private upstreamReusable = true;

  constructor(
    private readonly client: ExchangeClient,
    private readonly head: RequestHead,
    private readonly target: RequestTarget,
    private readonly info: ClientInfo,
    private readonly settings: ForwardSettings,
    private readonly onResponseStart: () => void,
  ) {
    this.method = head.method;
    const framing = head.framing;
    this.requestDone = framing.kind === "none";
    this.bodyRemaining = framing.kind === "length" ? framing.length : 0;
    this.bodyDecoder = framing.kind === "chunked" ? new ChunkedDecoder() : null;
    const framingLine =
      framing.kind === "length"
        ? `Content-Length: ${framing.length}\r\n`
        : framing.kind === "chunked"
          ? "Transfer-Encoding: chunked\r\n"
          : "";
    this.requestHead = upstreamRequestHead(
      head.method,
      targetString(target),
      head.headers,
      info,
      settings.upstreamHost,
      framingLine,
    );
    if (framing.kind === "length") settings.metrics.countBytes("in", framing.length);
  }

  /** Connects upstream and sends the head. Sent only now, so a rejected upload never gets "100 Continue". */
  start(): void {
    const { pool } = this.settings;
    if (this.head.expectContinue && !this.requestDone) this.client.wire.write(CONTINUE);
    if (this.requestDone) this.startTimer();
    const retried =
      RETRIED_METHODS.has(this.method) && this.head.framing.kind !== "chunked" && this.bodyRemaining <= RETRY_BYTES;
    const idle = pool.take(retried ? undefined : FRESH_IDLE_MS);
    if (idle !== null) this.attach(idle);
    else this.connect();
  }

  private connect(): void {
    this.settings.pool.open().then(
      (connection) => {
        if (this.finished) this.settings.pool.release(connection);
        else this.attach(connection);
      },
      (error: unknown) => {
        if (this.finished) return;
        const code = String((error as { code?: string }).code ?? (error as Error).name);
        this.settings.metrics.countUpstreamError("unreachable");
        this.settings.logger.error({ method: this.method, path: this.target.path, error: code }, "upstream request failed");
        this.fail(gateError(502, "Bad Gateway: Mattermost is unreachable", this.method));
      },
    );
  }

  private attach(connection: UpstreamConnection): void {
    this.upstream = connection;
    connection.handler = this;
    const first = [...(this.replay ?? [this.requestHead]), ...this.waiting!];
    this.replay = null;
    this.waiting = null;
    this.waitingBytes = 0;
    this.sendUp(first.length === 1 ? first[0]! : Buffer.concat(first));
    if (!this.requestDone) this.client.resumeReading();
  }

  /** Writes request bytes upstream, or keeps them until the connection is there. */
  private sendUp(data: Buffer): void {
    if (this.waiting !== null) {
      this.waiting.push(data);
      this.waitingBytes += data.length;
      if (this.waitingBytes >= HIGH_WATER_BYTES) this.client.pauseReading();
      return;
    }
    if (this.sent !== null) {
      this.sentBytes += data.length;
      if (this.sentBytes > RETRY_BYTES) this.sent = null;
      else this.sent.push(data);
    }
    if (!this.upstream!.wire.write(data) && !this.requestDone) this.client.pauseReading();
  }

  /**
   * Takes client bytes that belong to the request body; returns how many it took. The
   * rest belongs to the next request on the connection.
   */
  onClientData(chunk: Buffer): number {
    if (this.requestDone || this.finished) return 0;
    if (this.bodyDecoder === null) {
      const consumed = Math.min(this.bodyRemaining, chunk.length);
      this.bodyRemaining -= consumed;
      if (this.bodyRemaining === 0) this.bodyDone();
      this.sendUp(consumed === chunk.length ? chunk : chunk.subarray(0, consumed));
      return consumed;
    }

    const step = this.bodyDecoder.push(chunk);
    if (!step.ok) {
      this.fail(gateError(400, "Bad Request: invalid chunked body", this.method));
      return chunk.length;
    }

    const encoded: Buffer[] = [];
    let bytes = 0;
    for (const piece of step.data) {
      bytes += piece.length;
      encoded.push(encodeChunk(piece));
    }
    this.bodyBytes += bytes;
    this.settings.metrics.countBytes("in", bytes);
    if (this.bodyBytes > this.settings.maxBodyBytes) {
      this.tooLarge();
      return chunk.length;
    }

    if (step.done) {
      this.bodyDone();
      encoded.push(LAST_CHUNK);
    }
    if (encoded.length > 0) this.sendUp(encoded.length === 1 ? encoded[0]! : Buffer.concat(encoded));
    return step.consumed;
  }

  private tooLarge(): void {
    const { logger, maxBodyBytes } = this.settings;
    if (this.response === null) {
      this.fail(gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, this.method));
      return;
    }
    // Mattermost responded before the whole body arrived, so 413 can no longer be sent.
    logger.warn({ method: this.method, path: this.target.path, max_body_bytes: maxBodyBytes }, "request body over the size limit");
    this.abort();
    this.client.wire.destroy();
  }

  /**
   * Marks the request body complete. Only from now on is Mattermost expected to
   * respond, so the upstream timeout starts here: an upload may take longer than it.
   */
  private bodyDone(): void {
    this.requestDone = true;
    if (this.response === null) this.startTimer();
  }

  private startTimer(): void {
    this.timer = setTimeout(() => this.timedOut(), this.settings.upstreamTimeoutMs);
  }

  /** Resumes reading Mattermost's response once the client can take more. */
  onClientDrain(): void {
    if (!this.finished && this.upstream !== null) this.upstream.wire.resume();
  }

  // UpstreamHandler
  onDrain(): void {
    if (!this.requestDone && !this.finished) this.client.resumeReading();
  }

  onData(chunk: Buffer): void {
    if (this.finished) return;
    this.client.progress++;
    this.responseBytesSeen = true;
    this.sent = null;
    if (this.response === null) {
      this.readHead(chunk);
      return;
    }
    this.relay(chunk);
  }

  private readHead(chunk: Buffer): void {
    let buffer = this.partialHead === null ? chunk : Buffer.concat([this.partialHead, chunk]);
    for (;;) {
      const end = headEnd(buffer);
      if (end < 0) {
        if (buffer.length > MAX_HEAD_BYTES) this.badGateway("response head too large");
        else this.partialHead = buffer;
        return;
      }
      const parsed = parseResponseHead(buffer, end, this.method);
      if (!parsed.ok || parsed.head.status === 101) {
        this.badGateway("invalid response head");
        return;
      }
      buffer = buffer.subarray(end);
      // Interim responses (100 Continue, 103 Early Hints) are the gate's to skip.
      if (parsed.head.status >= 200) {
        this.partialHead = null;
        const framing = parsed.head.framing.kind;
        if ((framing === "chunked" || framing === "close") && transferCodings(parsed.head) !== "chunked") {
          this.badGateway("unsupported transfer coding");
          return;
        }
        // Bytes after a response without a body belong to no response.
        if (buffer.length > 0 && parsed.head.framing.kind === "none") this.upstreamReusable = false;
        this.startResponse(parsed.head);
        if (buffer.length > 0 && !this.finished) this.relay(buffer);
        return;
      }
    }
  }

  private startResponse(response: ResponseHead): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.response = response;
    const http10 = this.head.version === "1.0";
    const framing = response.framing;
    let framingLines = "";
    let keepLength = true;
    if (framing.kind === "chunked" || framing.kind === "close") {
      keepLength = false;
      if (http10) this.closeClient = true;
      else {
        this.rechunk = true;
        framingLines = "Transfer-Encoding: chunked\r\n";
      }
      if (framing.kind === "chunked") this.responseDecoder = new ChunkedDecoder();
      else this.upstreamReusable = false;
    } else if (framing.kind === "length") {
      this.responseRemaining = framing.length;
    } else if (response.status === 204) {
      // RFC 9110 section 8.6: a 204 has no Content-Length.
      keepLength = false;
    }

    if (!response.keepAlive) this.upstreamReusable = false;
    // A response that starts before the request body is complete ends the client
    // connection: the rest of the body would have to be read and thrown away.
    if (!this.head.keepAlive || this.client.closing || !this.requestDone) this.closeClient = true;

    let connectionLine = "";
    if (this.closeClient) connectionLine = "Connection: close\r\n";
    else if (http10) connectionLine = "Connection: keep-alive\r\n";
    const head = clientResponseHead(response.status, response.reason, response.headers, keepLength, framingLines + connectionLine);

    if (framing.kind === "length" && framing.length <= SMALL_BODY_BYTES) {
      this.collected = [];
      this.collectedHead = head;
      return;
    }

    this.onResponseStart();
    this.client.wire.write(Buffer.from(head, "latin1"));
    if (framing.kind === "none") this.responseComplete();
  }

  /** Relays response body bytes to the client. */
  private relay(chunk: Buffer): void {
    const response = this.response!;
    const { metrics } = this.settings;
    if (response.framing.kind === "length") {
      const consumed = Math.min(this.responseRemaining, chunk.length);
      // Bytes past the declared length belong to no response, so the connection is spoiled.
      if (consumed < chunk.length) this.upstreamReusable = false;
      this.responseRemaining -= consumed;
      const piece = consumed === chunk.length ? chunk : chunk.subarray(0, consumed);
      metrics.countBytes("out", consumed);
      if (this.collected !== null) {
        this.collected.push(piece);
        if (this.responseRemaining === 0) this.sendCollected();
        return;
      }
      this.toClient(piece);
      if (this.responseRemaining === 0) this.responseComplete();
      return;
    }

    if (response.framing.kind === "none") {
      this.upstreamReusable = false;
      return;
    }

    let pieces: Buffer[];
    let done = false;
    if (this.responseDecoder !== null) {
      const step = this.responseDecoder.push(chunk);
      if (!step.ok) {
        this.cutOff("invalid chunked response body");
        return;
      }
      if (step.consumed < chunk.length) this.upstreamReusable = false;
      pieces = step.data;
      done = step.done;
    } else {
      pieces = [chunk];
    }

    const out: Buffer[] = [];
    for (const piece of pieces) {
      metrics.countBytes("out", piece.length);
      out.push(this.rechunk ? encodeChunk(piece) : piece);
    }
    if (done && this.rechunk) out.push(LAST_CHUNK);
    if (out.length > 0) this.toClient(out.length === 1 ? out[0]! : Buffer.concat(out));
    if (done) this.responseComplete();
  }

  private toClient(data: Buffer): void {
    if (!this.client.wire.write(data) && this.upstream !== null) this.upstream.wire.pause();
  }

  private sendCollected(): void {
    const pieces = this.collected!;
    this.collected = null;
    this.onResponseStart();
    this.client.wire.write(Buffer.concat([Buffer.from(this.collectedHead, "latin1"), ...pieces]));
    this.responseComplete();
  }

  private responseComplete(): void {
    // Without the rest of the request body, the upstream connection is out of step.
    if (!this.requestDone) this.upstreamReusable = false;
    this.complete();
  }

  /** Ends the exchange after a complete response. */
  private complete(): void {
    if (this.finished) return;
    this.finished = true;
    const upstream = this.upstream;
    this.upstream = null;
    if (upstream !== null) {
      if (this.upstreamReusable && this.requestDone) {
        upstream.wire.resume();
        this.settings.pool.release(upstream);
      } else {
        upstream.handler = null;
        upstream.wire.destroy();
      }
    }
    this.client.exchangeDone(!this.closeClient && this.requestDone);
  }

  onClose(clean: boolean): void {
    if (this.finished) return;
    const upstream = this.upstream;
    this.upstream = null;
    if (this.response === null) {
      const retried = RETRIED_METHODS.has(this.method) && this.sent !== null;
      if (!this.responseBytesSeen && retried && upstream !== null && upstream.served > 0) {
        this.retry();
        return;
      }
      this.settings.metrics.countUpstreamError("unreachable");
      const error = upstream?.tlsFailure ?? "ECONNRESET";
      this.settings.logger.error({ method: this.method, path: this.target.path, error }, "upstream request failed");
      this.fail(gateError(502, "Bad Gateway: Mattermost closed the connection", this.method));
      return;
    }
    // A body delimited by the connection ends with a clean close, never with an error.
    if (this.response.framing.kind === "close" && this.collected === null && clean) {
      if (this.rechunk) this.client.wire.write(LAST_CHUNK);
      this.upstreamReusable = false;
      this.responseComplete();
      return;
    }
    this.cutOff("upstream closed the connection");
  }

  /** Sends everything again on a new connection after a reused one failed before responding. */
  private retry(): void {
    this.replay = this.sent;
    this.sent = [];
    this.sentBytes = 0;
    this.waiting = [];
    this.waitingBytes = 0;
    this.connect();
  }

  /** Mattermost's response broke off after it started. */
  private cutOff(reason: string): void {
    this.settings.metrics.countUpstreamError("cut-off");
    this.settings.logger.error({ method: this.method, path: this.target.path, error: reason }, "upstream response body failed");
    if (this.collected !== null) {
      // Nothing reached the client yet, so it can still learn what happened.
      this.collected = null;
      this.fail(gateError(502, "Bad Gateway: Mattermost's response was cut off", this.method));
      return;
    }
    // The head is already sent, so the only way to tell the client is to cut the
    // connection before the body is complete.
    this.abort();
    this.client.wire.destroy();
  }

  private badGateway(reason: string): void {
    this.settings.metrics.countUpstreamError("unreachable");
    this.settings.logger.error({ method: this.method, path: this.target.path, error: reason }, "upstream request failed");
    this.fail(gateError(502, "Bad Gateway: invalid response from Mattermost", this.method));
  }

  private timedOut(): void {
    this.timer = null;
    if (this.finished || this.response !== null) return;
    const seconds = this.settings.upstreamTimeoutMs / 1000;
    this.settings.metrics.countUpstreamError("timeout");
    this.settings.logger.error({ method: this.method, path: this.target.path, timeout_seconds: seconds }, "upstream timed out");
    this.fail(gateError(504, `Gateway Timeout: Mattermost did not respond within ${seconds} s`, this.method));
  }

  /**
   * Returns how long the exchange may go without progress before the sweep calls `stalled`, in
   * ms: the client timeout while the request body arrives, the upstream timeout while
   * the response does, and null while it waits for the response head, which the upstream
   * timer covers.
   */
  stallLimitMs(clientTimeoutMs: number): number | null {
    if (this.finished) return null;
    if (!this.requestDone) return clientTimeoutMs;
    return this.response === null ? null : this.settings.upstreamTimeoutMs;
  }

  /** Ends an exchange on which neither side has moved for longer than `stallLimitMs`. */
  stalled(): void {
    const { logger, metrics, upstreamTimeoutMs } = this.settings;
    if (!this.requestDone && this.response === null) {
      logger.warn({ method: this.method, path: this.target.path }, "request body stalled");
      this.fail(gateError(408, "Request Timeout: the request body stopped arriving", this.method));
      return;
    }
    if (this.collected !== null) {
      metrics.countUpstreamError("timeout");
      logger.error({ method: this.method, path: this.target.path, timeout_seconds: upstreamTimeoutMs / 1000 }, "upstream timed out");
      this.collected = null;
      this.fail(gateError(504, "Gateway Timeout: Mattermost's response stopped arriving", this.method));
      return;
    }
    // Either Mattermost stopped sending or the client stopped reading; the head is out,
    // so cutting both connections is the only way to end it.
    logger.warn({ method: this.method, path: this.target.path }, "response stalled");
    this.abort();
    this.client.wire.destroy();
  }

  /** Sends the gate's own response in place of Mattermost's, before any of it has been sent. */
  private fail(response: FixedResponse): void {
    if (this.finished) return;
    this.abort();
    this.onResponseStart();
    const close = !this.requestDone || this.closeClient || !this.head.keepAlive || this.client.closing;
    this.client.sendFixed(response, close, this.head.version);
    this.client.exchangeDone(!close);
  }

  /** Stops the exchange and drops the upstream connection, for a client that went away. */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const upstream = this.upstream;
    this.upstream = null;
    if (upstream !== null) {
      upstream.handler = null;
      upstream.wire.destroy();
    }
  }

  /** True while the request body is still arriving. */
  get readingBody(): boolean {
    return !this.requestDone && !this.finished;
  }

  get path(): string {
    return this.target.path;
  }
}

/**
 * Returns "chunked" when the response has no transfer coding or only chunked, the one
 * coding the gate can relay: anything else would reach the client still encoded,
 * with nothing to say so.
 */
function transferCodings(response: ResponseHead): string {
  const value = headerValue(response.headers, "transfer-encoding");
  return value === null ? "chunked" : value.trim().toLowerCase();
}
