// One TCP or TLS connection as the gate writes to it. Bun's socket.write() sends what the
// kernel takes and returns the count, so the rest waits here until the drain event.
// test/bun-behaviour.test.ts pins that behaviour of Bun.
import type { Socket } from "bun";

/** Bytes queued beyond which a writer should stop reading from its source. */
export const HIGH_WATER_BYTES = 256 * 1024;

/** Bytes handed to every wire since start-up; the server paces garbage collection by it. */
export const written = { bytes: 0 };

export class Wire {
  private queue: Buffer[] = [];
  private queued = 0;
  private ending = false;
  /** True once the socket is closed or destroyed; writes are dropped from then on. */
  closed = false;
  private paused = false;
  /** Called when the queue falls below the high-water mark after a write returned false. */
  onDrain: (() => void) | null = null;

  constructor(readonly socket: Socket<unknown>) {}

  /** Bytes accepted but not yet taken by the kernel. */
  get pending(): number {
    return this.queued;
  }

  /** Writes `data`; returns false when the caller should wait for onDrain before writing more. */
  write(data: Buffer): boolean {
    if (this.closed || this.ending || data.length === 0) return !this.closed;
    written.bytes += data.length;
    if (this.queued === 0) {
      const written = this.socket.write(data);
      if (written === data.length) return true;
      if (written < 0) return false;
      const rest = data.subarray(Math.max(written, 0));
      this.queue.push(rest);
      this.queued += rest.length;
    } else {
      this.queue.push(data);
      this.queued += data.length;
    }
    return this.queued < HIGH_WATER_BYTES;
  }

  /** Counts drain events, for timeouts that measure how fast the peer reads. */
  flushes = 0;

  /** Writes what is queued; called from the socket's drain event. */
  flush(): void {
    this.flushes++;
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0]!;
      const written = this.socket.write(head);
      if (written < 0) return;
      this.queued -= written;
      if (written < head.length) {
        this.queue[0] = head.subarray(written);
        return;
      }
      this.queue.shift();
    }
    if (this.ending && this.queued === 0) this.socket.shutdown();
    else if (this.queued < HIGH_WATER_BYTES) this.onDrain?.();
  }

  /** Stops reading from the peer, so that its writes back up; a no-op when already paused. */
  pause(): void {
    if (this.paused || this.closed) return;
    this.paused = true;
    this.socket.pause();
  }

  /** Reads from the peer again; a no-op unless paused. */
  resume(): void {
    if (!this.paused || this.closed) return;
    this.paused = false;
    this.socket.resume();
  }

  /**
   * Closes the sending side once everything queued is written, with a FIN, and goes on
   * reading. Bun's socket.end() would close the descriptor, and the kernel then resets
   * the connection for any byte the peer still sends, which can destroy a response the
   * peer has not read yet. test/bun-behaviour.test.ts pins both behaviours.
   */
  end(data?: Buffer): void {
    if (data !== undefined) this.write(data);
    if (this.ending || this.closed) return;
    this.ending = true;
    if (this.queued === 0) this.socket.shutdown();
  }

  /** Closes the connection now, dropping anything queued. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.queued = 0;
    this.socket.terminate();
  }

  /** Marks the wire closed after the socket's close event. */
  markClosed(): void {
    this.closed = true;
    this.queue = [];
    this.queued = 0;
  }
}
