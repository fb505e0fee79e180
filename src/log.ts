// Structured logging: JSON lines on stdout with a constant message and named fields, so
// that journald keeps them and tools can filter them. Callers pass no secret, cookie,
// authorization header or query string. A line looks like
//   {"level":"info","time":"2026-12-04T19:00:00.000Z","service":"preauth-gate",...,"msg":"gate started"}
import { writeSync } from "node:fs";
import type { LogLevel } from "./config.ts";

type Fields = Record<string, unknown>;

export interface Logger {
  /** The lowest level written; "silent" writes nothing. */
  level: LogLevel | "silent";
  debug(fields: Fields, message: string): void;
  info(fields: Fields, message: string): void;
  warn(fields: Fields, message: string): void;
  error(fields: Fields, message: string): void;
}

const SEVERITY: Readonly<Record<LogLevel | "silent", number>> = { debug: 20, info: 30, warn: 40, error: 50, silent: 99 };

/** The destination of log lines: a file descriptor, written synchronously so that no line is lost at exit, or a function. */
export type LogDestination = number | ((line: string) => void);

/** Serialises values JSON cannot hold (errors, big integers, cycles) as short strings instead of throwing. */
function serialise(record: Fields): string {
  try {
    return JSON.stringify(record, (_key, value: unknown) => {
      if (typeof value === "bigint") return value.toString();
      if (value instanceof Error) return value.name;
      return value;
    });
  } catch {
    return JSON.stringify({ level: record.level, time: record.time, service: record.service, msg: record.msg });
  }
}

/**
 * Writes a line to a file descriptor. A full non-blocking pipe is retried for a moment;
 * a line that still cannot be written is dropped, since logging must never stop the gate.
 */
function writeLine(fd: number, line: string): void {
  const bytes = Buffer.from(line);
  let offset = 0;
  for (let attempt = 0; offset < bytes.length && attempt < 100; attempt++) {
    try {
      offset += writeSync(fd, bytes, offset);
    } catch (error) {
      if ((error as { code?: string }).code !== "EAGAIN") return;
      Bun.sleepSync(1);
    }
  }
}

export function createLogger(level: LogLevel | "silent", destination: LogDestination = 1): Logger {
  const write = typeof destination === "number" ? (line: string) => writeLine(destination, line) : destination;
  let threshold = SEVERITY[level];
  let current = level;

  function emit(name: LogLevel, fields: Fields, message: string): void {
    if (SEVERITY[name] < threshold) return;
    // Level, time and service come first and msg last, whatever the fields contain.
    const record: Fields = { level: name, time: new Date().toISOString(), service: "preauth-gate" };
    for (const key in fields) if (!(key in record) && key !== "msg") record[key] = fields[key];
    record.msg = message;
    write(`${serialise(record)}\n`);
  }

  return {
    get level() {
      return current;
    },
    set level(next) {
      current = next;
      threshold = SEVERITY[next];
    },
    debug: (fields, message) => emit("debug", fields, message),
    info: (fields, message) => emit("info", fields, message),
    warn: (fields, message) => emit("warn", fields, message),
    error: (fields, message) => emit("error", fields, message),
  };
}
