// Structured logging: JSON lines on stdout with a constant message and named fields, so
// that journald keeps them and tools can filter them. Callers pass no secret, cookie,
// authorization header or query string.
import pino, { type Logger } from "pino";
import type { LogLevel } from "./config.ts";

export type { Logger };

export function createLogger(level: LogLevel, destination: number = 1): Logger {
  return pino(
    {
      level,
      base: { service: "preauth-gate" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: destination, sync: true }),
  );
}
