// One client connection: read a request head, decide, then respond, forward or tunnel, and
// read the next head only once the exchange is over. Requests on a connection are
// therefore handled strictly in order, pipelined ones included.
import type { Socket } from "bun";
import { Exchange, requestProblem, type ExchangeClient, type ForwardSettings } from "./exchange.ts";
import { headerValue, SECRET_HEADER, type ClientInfo } from "./headers.ts";
import { headEnd, MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from "./http1.ts";
import type { Decision, Gate } from "./gate.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { RejectionLog } from "./rejection-log.ts";
import { fixedResponseBytes, gateError, rejection, type FixedResponse } from "./responses.ts";
import { parseRequestTarget, type RequestTarget } from "./target.ts";
import { isValidHandshake, isWebSocketUpgrade, Tunnel, type TunnelClient, type UpgradeOptions, type TunnelRegistry } from "./websocket.ts";
import { HIGH_WATER_BYTES, Wire } from "./wire.ts";

/** Everything a request needs that a reload can change. */
export interface GateState {
  readonly gate: Gate;
  readonly forward: ForwardSettings;
  readonly upgrade: UpgradeOptions;
  readonly isTrustedProxy: (address: string) => boolean;
  readonly protocol: "http" | "https";
  /** Idle time of a kept-alive client connection, in milliseconds. */
  readonly idleTimeoutMs: number;
  /** Time a client has for a request head, and the longest pause in a request body, in milliseconds. */
  readonly clientTimeoutMs: number;
}

/** The state and shutdown bookkeeping that all client connections share. */
export interface ConnectionHost {
  state(): GateState;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly rejections: RejectionLog;
  readonly tunnels: TunnelRegistry;
  readonly closing: boolean;
  /** Tracks requests in flight: +1 when an exchange starts and -1 when it ends. */
  countInFlight(change: number): void;
}

/** Time a closing connection may take to read what the client still sends, in milliseconds. */
const LINGER_MS = 5_000;
const CR = 0x0d;
const LF = 0x0a;

type Phase = "head" | "exchange" | "tunnel" | "closing";

/** The outcome of parsing and deciding. `target` is null when deciding failed. */
type Checked =
  | { readonly kind: "bad-target" }
  | { readonly kind: "decided"; readonly target: RequestTarget | null; readonly decision: Decision; readonly isUpgrade: boolean };

/**
 * Parses the raw target and decides. Any exception here is a rejection: the
 * authentication path fails closed, never with a 500 and never open.
 */
function decideSafely(gate: Gate, head: RequestHead, logger: Logger): Checked {
  try {
    const parsed = parseRequestTarget(head.target);
    if (!parsed.ok) return { kind: "bad-target" };
    const isUpgrade = isWebSocketUpgrade(head.headers);
    const decision = gate.decide(parsed.target.path, headerValue(head.headers, SECRET_HEADER), isUpgrade);
    return { kind: "decided", target: parsed.target, decision, isUpgrade };
  } catch (error) {
    logger.error({ error: (error as Error).name }, "authentication check failed");
    return { kind: "decided", target: null, decision: { outcome: "rejected", reason: "wrong" }, isUpgrade: false };
  }
}

export class ClientConnection implements ExchangeClient, TunnelClient {
  readonly wire: Wire;
  private phase: Phase = "head";
  private buffer: Buffer | null = null;
  private exchange: Exchange | null = null;
  private tunnel: Tunnel | null = null;
  /** True once the client has sent FIN: complete requests get responses, then the connection closes. */
  private ended = false;
  /** Bytes at the start of `buffer` already searched for the end of the head. */
  private scanned = 0;
  /** Growable storage for a head that arrives in pieces; `buffer` is a view of it. */
  private store: Buffer | null = null;
  /** The count of reads and drains. A count unchanged since the last sweep marks a stalled connection. */
  progress = 0;
  private sweptProgress = 0;
  /** The wire's drain count at the last sweep, for a closing connection, where reads do not count. */
  private sweptFlushes = 0;
  /** The peer's address, read once: Bun computes it on every access. */
  private readonly address: string;
  /** performance.now() when the connection became idle, the head began, or closing began. */
  private since = performance.now();

  constructor(
    socket: Socket<unknown>,
    private readonly host: ConnectionHost,
  ) {
    this.wire = new Wire(socket);
    this.address = socket.remoteAddress;
    this.wire.onDrain = () => {
      this.progress++;
      if (this.phase === "head") {
        this.resumeReading();
        if (this.buffer !== null) this.readHeads();
        return;
      }
      this.exchange?.onClientDrain();
      this.tunnel?.onClientDrain();
    };
  }

  get closing(): boolean {
    return this.host.closing;
  }

  onData(chunk: Buffer): void {
    this.progress++;
    switch (this.phase) {
      case "head":
        if (this.buffer === null) this.since = performance.now();
        this.appendHead(chunk);
        this.readHeads();
        return;
      case "exchange": {
        const exchange = this.exchange!;
        if (exchange.readingBody) {
          const consumed = exchange.onClientData(chunk);
          if (consumed < chunk.length) this.onData(chunk.subarray(consumed));
          return;
        }
        // A pipelined request waits until the exchange is over.
        this.appendHead(chunk);
        if (this.buffer!.length > MAX_HEAD_BYTES) this.pauseReading();
        return;
      }
      case "tunnel":
        this.tunnel!.onClientData(chunk);
        return;
      case "closing":
        return;
    }
  }

  /**
   * Adds bytes to the head being read. A head that arrives in many small pieces is
   * collected in storage that grows geometrically, so it costs linear work, not quadratic.
   */
  private appendHead(chunk: Buffer): void {
    if (this.buffer === null) {
      this.buffer = chunk;
      this.scanned = 0;
      return;
    }
    const length = this.buffer.length;
    const needed = length + chunk.length;
    let store = this.store;
    if (store === null || store.buffer !== this.buffer.buffer || store.byteOffset !== this.buffer.byteOffset || needed > store.length) {
      store = Buffer.allocUnsafe(Math.max(needed * 2, 4096));
      this.buffer.copy(store, 0);
      this.store = store;
    }
    chunk.copy(store, length);
    this.buffer = store.subarray(0, needed);
  }

  /** Handles every complete head in the buffer, in order, while the connection stays in "head". */
  private readHeads(): void {
    while (this.phase === "head" && this.buffer !== null) {
      // Responses the client has not read yet hold further requests back.
      if (this.wire.pending >= HIGH_WATER_BYTES) {
        this.pauseReading();
        return;
      }
      let buffer = this.buffer;
      // RFC 9112 section 2.2: empty lines before a request line are ignored.
      while (buffer.length >= 2 && buffer[0] === CR && buffer[1] === LF) {
        buffer = buffer.subarray(2);
        this.scanned = 0;
      }
      if (buffer.length === 0) {
        this.buffer = null;
        break;
      }
      this.buffer = buffer;
      const end = headEnd(buffer, this.scanned);
      if (end < 0) {
        if (buffer.length > MAX_HEAD_BYTES) this.closeWith(gateError(431, "Request Header Fields Too Large", "GET"));
        else if (hasBareLineFeed(buffer, this.scanned)) {
          this.closeWith(gateError(400, "Bad Request: a line ends without CR", "GET"));
        } else if (this.ended) this.close();
        else this.scanned = Math.max(0, buffer.length - 3);
        return;
      }
      this.scanned = 0;
      const parsed = parseRequestHead(buffer, end);
      if (!parsed.ok) {
        this.closeWith(gateError(parsed.status, parsed.message, "GET"));
        return;
      }
      this.buffer = end < buffer.length ? buffer.subarray(end) : null;
      this.since = performance.now();
      this.handle(parsed.head);
      if (this.phase !== "head" && this.buffer !== null) {
        const rest = this.buffer;
        this.buffer = null;
        this.onData(rest);
      }
    }
    if (this.phase === "head" && this.ended) this.close();
  }

  private handle(head: RequestHead): void {
    const { logger, metrics } = this.host;
    const arrival = Bun.nanoseconds();
    const state = this.host.state();
    const method = head.method;
    const checked = decideSafely(state.gate, head, logger);
    if (checked.kind === "bad-target") {
      this.answer(head, gateError(400, "Bad Request: invalid request target", method));
      return;
    }

    const { target, decision, isUpgrade } = checked;
    metrics.countDecision(decision);
    const address = this.address;
    if (target === null || decision.outcome === "rejected") {
      this.host.rejections.record({
        client: address,
        method,
        path: target?.path ?? null,
        userAgent: headerValue(head.headers, "user-agent"),
        reason: decision.outcome === "rejected" ? decision.reason : "wrong",
      });
      metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9);
      this.answer(head, rejection(method));
      return;
    }

    const info: ClientInfo = { address, trusted: state.isTrustedProxy(address), protocol: state.protocol };
    if (isUpgrade || head.upgradeRequested) {
      this.upgrade(head, target, info, state, isUpgrade);
      return;
    }

    const problem = requestProblem(head, target, state.forward.maxBodyBytes);
    if (problem !== null) {
      metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9);
      this.answer(head, problem);
      return;
    }

    const exchange = new Exchange(this, head, target, info, state.forward, () =>
      metrics.observeLatency((Bun.nanoseconds() - arrival) / 1e9),
    );
    this.exchange = exchange;
    this.phase = "exchange";
    this.host.countInFlight(1);
    exchange.start();
  }

  private upgrade(head: RequestHead, target: RequestTarget, info: ClientInfo, state: GateState, isWebSocket: boolean): void {
    if (!isWebSocket) {
      // NOTE: the gate tunnels WebSocket upgrades only; another upgrade (h2c, for
      // example) is answered with 400 instead of being forwarded as a plain request.
      this.closeWith(gateError(400, "Bad Request: only WebSocket upgrades are supported", head.method));
      return;
    }
    if (!isValidHandshake(head) || head.framing.kind !== "none") {
      this.closeWith(gateError(400, "Bad Request: invalid WebSocket handshake", head.method));
      return;
    }
    this.phase = "tunnel";
    this.tunnel = new Tunnel(this, head, target, info, state.upgrade, this.host.tunnels);
    this.tunnel.start();
  }

  /**
   * Sends the gate's own response to a request it does not forward. A request with a
   * body closes the connection: its body is never read, so it cannot be taken for the
   * next request. So does a rejected upgrade, whose client expects no further response.
   */
  private answer(head: RequestHead, response: FixedResponse): void {
    const close = head.framing.kind !== "none" || !head.keepAlive || head.upgradeRequested || this.host.closing;
    this.sendFixed(response, close, head.version);
    if (close) this.close();
  }

  sendFixed(response: FixedResponse, close: boolean, version: "1.0" | "1.1" = "1.1"): void {
    this.host.metrics.countOwnResponse(response.status);
    // Rejections have their own rate-limited log, so only the gate's other errors go to debug.
    if (response.status !== 403) {
      this.host.logger.debug({ client: this.address, status: response.status, reason: response.body.trim() }, "gate error response");
    }
    let connection: string | null = null;
    if (close) connection = "close";
    else if (version === "1.0") connection = "keep-alive";
    this.wire.write(fixedResponseBytes(response, connection));
  }

  /** Sends the gate's own response and closes the connection. */
  closeWith(response: FixedResponse): void {
    this.sendFixed(response, true);
    this.close();
  }

  exchangeDone(reusable: boolean): void {
    this.exchange = null;
    this.host.countInFlight(-1);
    if (this.phase !== "exchange") return;
    if (!reusable || this.host.closing || this.wire.closed) {
      this.close();
      return;
    }
    this.phase = "head";
    this.since = performance.now();
    this.resumeReading();
    if (this.buffer !== null) this.readHeads();
    else if (this.ended) this.close();
  }

  pauseReading(): void {
    this.wire.pause();
  }

  resumeReading(): void {
    this.wire.resume();
  }

  /**
   * Ends the connection once queued responses are written. What the client still sends
   * is read and dropped for a while, so that the kernel does not reset the connection
   * and destroy a response the client has not read yet.
   */
  close(): void {
    if (this.phase === "closing") return;
    this.phase = "closing";
    this.buffer = null;
    this.since = performance.now();
    this.resumeReading();
    this.wire.end();
  }

  /** Handles the client's FIN. */
  onEnd(): void {
    this.ended = true;
    switch (this.phase) {
      case "head":
        this.readHeads();
        return;
      case "exchange":
        // A body cut short by the client can never be completed.
        if (this.exchange!.readingBody) this.wire.destroy();
        return;
      case "tunnel":
        this.tunnel!.onClientClose();
        this.close();
        return;
      case "closing":
        // The client sends nothing more; once the gate has nothing more to send either,
        // the connection is done.
        if (this.wire.pending === 0) this.wire.destroy();
        return;
    }
  }

  onClose(): void {
    this.wire.markClosed();
    const exchange = this.exchange;
    if (exchange !== null) {
      this.exchange = null;
      this.host.logger.debug({ path: exchange.path }, "client closed the request");
      exchange.abort();
      this.host.countInFlight(-1);
    }
    this.tunnel?.onClientClose();
    this.phase = "closing";
  }

  /** True when the connection waits for a request and has no bytes of one. */
  get idle(): boolean {
    return this.phase === "head" && this.buffer === null;
  }

  /** Closes the connection if a timeout has passed; called about once a second. */
  sweep(now: number): void {
    const state = this.host.state();
    switch (this.phase) {
      case "head":
        if (this.buffer === null) {
          if (now - this.since > state.idleTimeoutMs) this.close();
        } else if (now - this.since > state.clientTimeoutMs) {
          this.closeWith(gateError(408, "Request Timeout", "GET"));
        }
        return;
      case "tunnel":
        if (now - this.tunnel!.lastActivity > state.upgrade.idleTimeoutMs) {
          // Both peers get a close frame, so an idle client reconnects instead of
          // seeing its connection reset.
          this.tunnel!.goAway("idle timeout");
          this.phase = "closing";
          this.since = now;
        }
        return;
      case "closing":
        // A response still queued gets the client timeout between two drains. After that,
        // the client has LINGER_MS to read the rest and close.
        if (this.wire.flushes !== this.sweptFlushes) {
          this.sweptFlushes = this.wire.flushes;
          this.since = now;
        } else if (now - this.since > (this.wire.pending > 0 ? state.clientTimeoutMs : LINGER_MS)) {
          this.wire.destroy();
        }
        return;
      case "exchange": {
        // Reads from either side and every drain of the client's queue count as progress.
        const progress = this.progress + this.wire.flushes;
        if (progress !== this.sweptProgress) {
          this.sweptProgress = progress;
          this.since = now;
          return;
        }
        const limit = this.exchange!.stallLimitMs(state.clientTimeoutMs);
        if (limit !== null && now - this.since > limit) this.exchange!.stalled();
        return;
      }
    }
  }
}

/** Reports whether `buffer` has a LF without a CR before it, at or after `from`. */
function hasBareLineFeed(buffer: Buffer, from: number): boolean {
  for (let index = buffer.indexOf(LF, from); index >= 0; index = buffer.indexOf(LF, index + 1)) {
    if (index === 0 || buffer[index - 1] !== CR) return true;
  }
  return false;
}
