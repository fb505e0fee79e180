// Logging of rejected requests without flooding the journal. The desktop app re-sends
// blocked page loads every few seconds while its prompt is open. So only the first
// rejection of a client and reason in each window is logged in full. The rest are
// counted and summarised when the window ends.
import type { Logger } from "./log.ts";
import type { RejectReason } from "./secrets.ts";

export interface RejectedRequest {
  readonly client: string;
  readonly method: string;
  /** Path only: a query string can carry tokens and is never logged. */
  readonly path: string | null;
  readonly userAgent: string | null;
  readonly reason: RejectReason;
}

export interface RejectionLog {
  record(request: RejectedRequest): void;
  /** Logs the summaries of the current window and starts a new one. */
  flush(): void;
  stop(): void;
}

export interface RejectionLogOptions {
  readonly windowMs: number;
  /** Most client and reason pairs tracked in one window; further pairs are counted together. */
  readonly maxKeys: number;
}

const DEFAULT_OPTIONS: RejectionLogOptions = { windowMs: 60_000, maxKeys: 10_000 };

export function createRejectionLog(logger: Logger, options: RejectionLogOptions = DEFAULT_OPTIONS): RejectionLog {
  /** Repeats after the first logged rejection, by "client reason". */
  let suppressed = new Map<string, number>();
  let overflow = 0;

  function flush(): void {
    for (const [key, count] of suppressed) {
      if (count === 0) continue;
      const [client, reason] = key.split(" ");
      logger.info({ client, reason, suppressed: count, window_seconds: options.windowMs / 1000 }, "rejections summarised");
    }
    if (overflow > 0) {
      logger.warn({ suppressed: overflow, window_seconds: options.windowMs / 1000 }, "rejections from too many clients to list");
    }
    suppressed = new Map();
    overflow = 0;
  }

  const timer = setInterval(flush, options.windowMs);
  timer.unref();

  return {
    record(request) {
      const key = `${request.client} ${request.reason}`;
      const count = suppressed.get(key);
      if (count !== undefined) {
        suppressed.set(key, count + 1);
        return;
      }
      if (suppressed.size >= options.maxKeys) {
        overflow++;
        return;
      }
      suppressed.set(key, 0);
      logger.info(
        {
          client: request.client,
          method: request.method,
          path: request.path,
          user_agent: request.userAgent,
          reason: request.reason,
        },
        "request rejected",
      );
    },
    flush,
    stop() {
      clearInterval(timer);
      flush();
    },
  };
}
