// The fixed responses the gate sends itself. None of them echoes request data.

export const REJECTION_BODY = "Forbidden: Invalid pre-authentication secret";

/** A response the gate writes itself, with header names in the case they go out in. */
export interface FixedResponse {
  readonly status: number;
  /** Complete header lines, each ending with CRLF. */
  readonly headers: string;
  /** Empty for HEAD; Content-Length still gives the length a GET would get. */
  readonly body: string;
}

function fixed(status: number, extraHeaders: string, text: string, method: string): FixedResponse {
  return {
    status,
    headers:
      `${extraHeaders}Cache-Control: no-store\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\n`,
    body: method === "HEAD" ? "" : text,
  };
}

const REJECTION_GET = fixed(403, "x-reject-reason: pre-auth\r\n", REJECTION_BODY, "GET");
const REJECTION_HEAD = fixed(403, "x-reject-reason: pre-auth\r\n", REJECTION_BODY, "HEAD");

/**
 * Builds the pre-auth rejection that Mattermost's desktop and mobile apps recognise: 403 with
 * `x-reject-reason: pre-auth`. The header name goes out in lower case, because mobile
 * 2.34 to 2.39 looked it up case-sensitively. No cache may keep it.
 */
export function rejection(method: string): FixedResponse {
  return method === "HEAD" ? REJECTION_HEAD : REJECTION_GET;
}

/** Builds a short plain-text error from the gate itself, never with `x-reject-reason`. */
export function gateError(status: number, message: string, method: string): FixedResponse {
  return fixed(status, "", `${message}\n`, method);
}

/**
 * Reason phrases (RFC 9110 section 15, and nginx's 499) of the statuses the gate sends
 * itself, including those it passes on from a refused WebSocket handshake.
 */
const REASONS: Readonly<Record<number, string>> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Payload Too Large",
  417: "Expectation Failed",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Unknown";
}

let cachedDate = new Date().toUTCString();
let cachedAt = Date.now();

/** The Date header's value, recomputed at most once a second. */
export function httpDate(): string {
  const now = Date.now();
  if (now - cachedAt >= 1000) {
    cachedAt = now;
    cachedDate = new Date(now).toUTCString();
  }
  return cachedDate;
}

/**
 * Serialises a fixed response. `connection` is the Connection header's value, or null to
 * send none (an HTTP/1.1 connection that stays open).
 */
export function fixedResponseBytes(response: FixedResponse, connection: string | null): Buffer {
  const connectionLine = connection === null ? "" : `Connection: ${connection}\r\n`;
  return Buffer.from(
    `HTTP/1.1 ${response.status} ${reasonPhrase(response.status)}\r\n${response.headers}` +
      `Date: ${httpDate()}\r\n${connectionLine}\r\n${response.body}`,
    "latin1",
  );
}
