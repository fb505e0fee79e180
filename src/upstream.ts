// Connections to Mattermost: opened on demand, kept open between requests and reused
// newest first, like nginx's `keepalive` upstream setting.
import type { Socket } from "bun";
import { Wire } from "./wire.ts";

/** Events of a connection, passed to the exchange or tunnel that uses it. */
export interface UpstreamHandler {
  onData(chunk: Buffer): void;
  /**
   * Reports that the connection closed, failed or was ended by Mattermost. `clean` is
   * false after an error. lost() detaches the handler first, so it is called once.
   */
  onClose(clean: boolean): void;
  onDrain(): void;
}

export class UpstreamConnection {
  readonly wire: Wire;
  handler: UpstreamHandler | null = null;
  /** The error code of a TLS handshake that failed, such as an untrusted certificate; null otherwise. */
  tlsFailure: string | null = null;
  /** Responses completed on this connection; above 0 it may have been closed by Mattermost meanwhile. */
  served = 0;
  idleSince = 0;

  constructor(socket: Socket<unknown>) {
    this.wire = new Wire(socket);
    this.wire.onDrain = () => this.handler?.onDrain();
  }

  /** Tells the current user that the connection is gone, once. */
  lost(clean: boolean): void {
    this.wire.markClosed();
    const handler = this.handler;
    this.handler = null;
    handler?.onClose(clean);
  }
}

/** Idle connections kept open at most. */
const MAX_IDLE_CONNECTIONS = 128;
/**
 * Idle time after which the gate closes a kept-alive connection itself. NOTE: it should
 * stay below Mattermost's idle timeout (ServiceSettings.IdleTimeout). A request on a
 * connection that Mattermost closes at that moment is sent again if its method is safe,
 * and gets 502 otherwise.
 */
const IDLE_CLOSE_MS = 50_000;

export interface UpstreamAddress {
  readonly hostname: string;
  readonly port: number;
  readonly secure: boolean;
}

/** Splits an upstream origin such as http://127.0.0.1:8065 into what a connection needs. */
export function upstreamAddress(origin: string): UpstreamAddress {
  const url = new URL(origin);
  const secure = url.protocol === "https:";
  return {
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(url.port || (secure ? 443 : 80)),
    secure,
  };
}

/**
 * Returns the connection of a socket, creating it on first use. Over TLS, Bun.connect
 * resolves before the open handler runs, so either may come first.
 */
function connectionOf(socket: Socket<UpstreamConnection | undefined>): UpstreamConnection {
  return (socket.data ??= new UpstreamConnection(socket as Socket<unknown>));
}

const handlers = {
  open(socket: Socket<UpstreamConnection | undefined>) {
    connectionOf(socket);
  },
  handshake(socket: Socket<UpstreamConnection | undefined>, success: boolean, error: Error | null) {
    // Bun closes the connection after a failed verification; this only keeps the reason.
    if (success) return;
    const code = (error as { code?: string } | null)?.code;
    connectionOf(socket).tlsFailure = code ?? error?.message ?? "TLS handshake failed";
  },
  data(socket: Socket<UpstreamConnection | undefined>, chunk: Buffer) {
    const connection = connectionOf(socket);
    if (connection.handler !== null) connection.handler.onData(chunk);
    // Bytes on an idle connection belong to no request, so the connection cannot be trusted.
    else connection.wire.destroy();
  },
  drain(socket: Socket<UpstreamConnection | undefined>) {
    connectionOf(socket).wire.flush();
  },
  end(socket: Socket<UpstreamConnection | undefined>) {
    connectionOf(socket).lost(true);
    socket.end();
  },
  close(socket: Socket<UpstreamConnection | undefined>, error?: Error) {
    connectionOf(socket).lost(error === undefined);
  },
  error(socket: Socket<UpstreamConnection | undefined>) {
    connectionOf(socket).lost(false);
  },
};

export class UpstreamPool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly sweeper: ReturnType<typeof setInterval>;
  private stopped = false;

  constructor(private readonly address: UpstreamAddress) {
    this.sweeper = setInterval(() => this.closeIdle(IDLE_CLOSE_MS), 5_000);
    this.sweeper.unref();
  }

  /**
   * Returns an open idle connection, newest first, or null. With `maxIdleMs`, older
   * idle connections are skipped.
   */
  take(maxIdleMs = IDLE_CLOSE_MS): UpstreamConnection | null {
    const oldest = performance.now() - maxIdleMs;
    while (this.idle.length > 0) {
      const connection = this.idle[this.idle.length - 1]!;
      if (connection.wire.closed) {
        this.idle.pop();
        continue;
      }
      // The list is in the order connections became idle, so if the newest is too old, all
      // are. They stay in the list for requests that accept older ones.
      if (connection.idleSince < oldest) return null;
      return this.idle.pop()!;
    }
    return null;
  }

  /** Opens a new connection; rejects when Mattermost cannot be reached. */
  async open(): Promise<UpstreamConnection> {
    const { hostname, port, secure } = this.address;
    const socket = await Bun.connect<UpstreamConnection | undefined>({
      hostname,
      port,
      tls: secure ? { serverName: hostname } : undefined,
      data: undefined,
      socket: handlers,
    });
    socket.setNoDelay(true);
    return connectionOf(socket);
  }

  /** Keeps a connection whose last response is complete for the next request. */
  release(connection: UpstreamConnection): void {
    connection.handler = null;
    connection.served++;
    if (connection.wire.closed) return;
    if (this.stopped || this.idle.length >= MAX_IDLE_CONNECTIONS) {
      connection.wire.destroy();
      return;
    }
    connection.idleSince = performance.now();
    this.idle.push(connection);
  }

  /** Closes idle connections unused for `olderThanMs` or longer; 0 closes them all. */
  closeIdle(olderThanMs = 0): void {
    const oldest = performance.now() - olderThanMs;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const connection = this.idle[i]!;
      if (connection.wire.closed || connection.idleSince <= oldest) {
        this.idle.splice(i, 1);
        connection.wire.destroy();
      }
    }
  }

  /** Stops the idle sweep and closes every idle connection. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.sweeper);
    this.closeIdle();
  }
}
