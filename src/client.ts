// One client connection: read a request head, decide, then answer, forward or tunnel, and
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
import { Wire } from "./wire.ts";

/** Everything a request needs that a reload can change. */
export interface GateState {
  readonly gate: Gate;
  readonly forward: ForwardSettings;
  readonly upgrade: UpgradeOptions;
  readonly isTrustedProxy: (address: string) => boolean;
  readonly protocol: "http" | "https";
  /** Idle time of a kept-alive client connection, in milliseconds. */
  readonly idleTimeoutMs: number;
}

/** What connections share: the current state and the bookkeeping for shutdown. */
export interface ConnectionHost {
  state(): GateState;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly rejections: RejectionLog;
  readonly tunnels: TunnelRegistry;
  readonly closing: boolean;
  /** Called with +1 when an exchange starts and -1 when it ends. */
  countInFlight(change: number): void;
}

/** Time a client has to send a request head, in milliseconds. */
export const HEADERS_TIMEOUT_MS = 60_000;
/** Time a closing connection may take to read what the client still sends, in milliseconds. */
const LINGER_MS = 5_000;

type Phase = "head" | "exchange" | "tunnel" | "closing";

/** The outcome of parsing and deciding; `target` is null when deciding failed. */
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
  private paused = false;
  /** The client has sent FIN: answer what is complete, then close. */
  private ended = false;
  /** performance.now() when the connection became idle, the head began, or closing began. */
  private since = performance.now();

  constructor(
    socket: Socket<unknown>,
    private readonly host: ConnectionHost,
  ) {
    this.wire = new Wire(socket);
    this.wire.onDrain = () => {
      this.exchange?.onClientDrain();
      this.tunnel?.onClientDrain();
    };
  }

  get closing(): boolean {
    return this.host.closing;
  }

  onData(chunk: Buffer): void {
    switch (this.phase) {
      case "head":
        if (this.buffer === null) {
          this.buffer = chunk;
          this.since = performance.now();
        } else {
          this.buffer = Buffer.concat([this.buffer, chunk]);
        }
        this.readHeads();
        return;
      case "exchange": {
        const exchange = this.exchange!;
        if (exchange.readingBody) {
          const taken = exchange.onClientData(chunk);
          if (taken < chunk.length) this.onData(chunk.subarray(taken));
          return;
        }
        // A pipelined request waits until the exchange is over.
        this.buffer = this.buffer === null ? chunk : Buffer.concat([this.buffer, chunk]);
        if (this.buffer.length > MAX_HEAD_BYTES) this.pauseReading();
        return;
      }
      case "tunnel":
        this.tunnel!.onClientData(chunk);
        return;
      case "closing":
        return;
    }
  }

  /** Handles every complete head in the buffer, in order, while the connection stays in "head". */
  private readHeads(): void {
    while (this.phase === "head" && this.buffer !== null) {
      const buffer = this.buffer;
      const end = headEnd(buffer);
      if (end < 0) {
        if (buffer.length > MAX_HEAD_BYTES) this.refuse(gateError(431, "Request Header Fields Too Large", "GET"));
        else if (this.ended) this.close();
        return;
      }
      const parsed = parseRequestHead(buffer, end);
      if (!parsed.ok) {
        this.refuse(gateError(parsed.status, parsed.message, "GET"));
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
    const address = this.wire.socket.remoteAddress;
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
      this.refuse(gateError(400, "Bad Request: only WebSocket upgrades are supported", head.method));
      return;
    }
    if (!isValidHandshake(head) || head.framing.kind !== "none") {
      this.refuse(gateError(400, "Bad Request: invalid WebSocket handshake", head.method));
      return;
    }
    this.phase = "tunnel";
    this.tunnel = new Tunnel(this, head, target, info, state.upgrade, this.host.tunnels);
    this.tunnel.start();
  }

  /**
   * Sends the gate's own response to a request it does not forward. A request with a
   * body closes the connection: its body is never read, so it cannot be taken for the
   * next request. So does a refused upgrade, whose client expects no further response.
   */
  private answer(head: RequestHead, response: FixedResponse): void {
    const close = head.framing.kind !== "none" || !head.keepAlive || head.upgradeRequested || this.host.closing;
    this.sendFixed(response, close, head.version);
    if (close) this.close();
  }

  sendFixed(response: FixedResponse, close: boolean, version: "1.0" | "1.1" = "1.1"): void {
    this.wire.write(fixedResponseBytes(response, close ? "close" : version === "1.0" ? "keep-alive" : null));
  }

  /** Sends the gate's own response and closes the connection. */
  refuse(response: FixedResponse): void {
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
    if (this.paused) return;
    this.paused = true;
    this.wire.socket.pause();
  }

  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.wire.socket.resume();
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

  /** The client has sent FIN. */
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

  /** True when the connection waits for a request and holds none. */
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
        } else if (now - this.since > HEADERS_TIMEOUT_MS) {
          this.refuse(gateError(408, "Request Timeout", "GET"));
        }
        return;
      case "tunnel":
        if (now - this.tunnel!.lastActivity > state.upgrade.idleTimeoutMs) this.tunnel!.destroy();
        return;
      case "closing":
        if (now - this.since > LINGER_MS) this.wire.destroy();
        return;
      case "exchange":
        return;
    }
  }
}
