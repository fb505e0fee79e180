// The fixed responses the gate sends itself. None of them echoes request data.
import { STATUS_CODES, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

export const REJECTION_BODY = "Forbidden: Invalid pre-authentication secret";

/** A response the gate writes itself, with header names in the case they go out in. */
export interface FixedResponse {
  readonly status: number;
  /** Alternating names and values, as `writeHead` takes them. */
  readonly headers: readonly string[];
  /** Empty for HEAD; Content-Length still gives the length a GET would get. */
  readonly body: string;
}

function fixed(status: number, extraHeaders: readonly string[], text: string, method: string): FixedResponse {
  return {
    status,
    headers: [
      ...extraHeaders,
      "Cache-Control",
      "no-store",
      "Content-Type",
      "text/plain; charset=utf-8",
      "Content-Length",
      String(Buffer.byteLength(text)),
    ],
    body: method === "HEAD" ? "" : text,
  };
}

/**
 * Builds the pre-auth rejection that Mattermost's desktop and mobile apps recognise: 403 with
 * `x-reject-reason: pre-auth`. The header name goes out in lower case, because mobile
 * 2.34 to 2.39 looked it up case-sensitively. No cache may keep it.
 */
export function rejection(method: string): FixedResponse {
  return fixed(403, ["x-reject-reason", "pre-auth"], REJECTION_BODY, method);
}

/** Builds a short plain-text error from the gate itself, never with `x-reject-reason`. */
export function gateError(status: number, message: string, method: string): FixedResponse {
  return fixed(status, [], `${message}\n`, method);
}

/** Reason phrases that node:http does not know. */
const EXTRA_REASONS: Readonly<Record<number, string>> = { 499: "Client Closed Request" };

function reasonPhrase(status: number): string {
  return STATUS_CODES[status] ?? EXTRA_REASONS[status] ?? "Unknown";
}

/** Sends a fixed response on a node:http response. */
export function sendFixed(res: ServerResponse, response: FixedResponse): void {
  res.writeHead(response.status, reasonPhrase(response.status), response.headers as string[]);
  res.end(response.body);
}

/**
 * Writes a fixed response straight onto a socket and closes it, for upgrade requests,
 * which node:http hands over as a bare socket.
 */
export function writeFixedToSocket(socket: Duplex, response: FixedResponse): void {
  const lines = [`HTTP/1.1 ${response.status} ${reasonPhrase(response.status)}`];
  for (let i = 0; i < response.headers.length; i += 2) lines.push(`${response.headers[i]}: ${response.headers[i + 1]}`);
  lines.push("Connection: close");
  socket.end(`${lines.join("\r\n")}\r\n\r\n${response.body}`);
}
