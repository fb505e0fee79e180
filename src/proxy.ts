// HTTP forwarding to Mattermost with fetch(): bodies stream both ways, redirects go back
// to the client, and compressed bodies stay compressed.
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { clientResponseHeaders, upstreamRequestHeaders, type ClientInfo } from "./headers.ts";
import { gateError } from "./responses.ts";
import { isForwardable, upstreamUrl, type RequestTarget } from "./target.ts";

export interface ProxyOptions {
  readonly upstreamOrigin: string;
  readonly upstreamTimeoutMs: number;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * Largest response body that is read whole before it is sent on. Bun 1.4 sends a
 * streamed response body with chunked framing and drops its Content-Length, so a body of
 * known length up to this size is buffered to keep Content-Length for the client.
 */
export const BUFFERED_RESPONSE_LIMIT = 1024 * 1024;

/** Statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

class UpstreamTimeout extends Error {}

export type Forwarder = (request: Request, target: RequestTarget, client: ClientInfo) => Promise<Response>;

/** Methods the gate never forwards: Mattermost serves neither, and TRACE echoes credentials. */
const REFUSED_METHODS = new Set(["CONNECT", "TRACE"]);

/**
 * Returns the request body's declared length, or null when the request has no
 * Content-Length. Bun joins repeated headers with ", ", which RFC 9112 section 6.3
 * allows only when every value is the same; anything else is NaN.
 */
function declaredBodyLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  if (value === null) return null;
  const values = value.split(",").map((item) => item.trim());
  if (!values.every((item) => /^\d+$/.test(item) && item === values[0])) return Number.NaN;
  return Number(values[0]);
}

/** Checks the request before anything goes upstream; returns the error response, or null. */
function requestProblem(request: Request, target: RequestTarget, maxBodyBytes: number): Response | null {
  const method = request.method;
  if (!isForwardable(target.path)) {
    return gateError(400, "Bad Request: the request path must not start with //", method);
  }
  if (REFUSED_METHODS.has(method)) {
    return gateError(405, `Method Not Allowed: ${method} is not forwarded`, method);
  }
  const declaredLength = declaredBodyLength(request.headers);
  if (Number.isNaN(declaredLength)) return gateError(400, "Bad Request: invalid Content-Length", method);
  if (declaredLength !== null && declaredLength > maxBodyBytes) {
    return gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, method);
  }
  return null;
}

/** Wraps bytes already read in a stream, so that Bun adds no Content-Type of its own. */
function streamOf(bytes: ArrayBuffer): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array(bytes));
      controller.close();
    },
  });
}

export function createForwarder(options: ProxyOptions): Forwarder {
  const { upstreamOrigin, upstreamTimeoutMs, maxBodyBytes, logger, metrics } = options;
  const timeoutSeconds = upstreamTimeoutMs / 1000;

  /** Chooses the body for the client: none, the bytes read whole, or the upstream stream. */
  async function clientBody(
    method: string,
    upstream: Response,
    path: string,
  ): Promise<ReadableStream<Uint8Array> | ArrayBuffer | null | Response> {
    if (method === "HEAD" || NULL_BODY_STATUSES.has(upstream.status)) return null;
    const length = Number(upstream.headers.get("content-length") ?? Infinity);
    if (length > BUFFERED_RESPONSE_LIMIT) {
      // NOTE: such a body reaches the client with chunked framing and no Content-Length,
      // because Bun.serve cannot stream a body of declared length.
      return upstream.body;
    }
    let bytes: ArrayBuffer;
    try {
      bytes = await upstream.arrayBuffer();
    } catch (error) {
      metrics.countUpstreamError("cut-off");
      logger.error({ method, path, error: (error as Error).name }, "upstream response body failed");
      return gateError(502, "Bad Gateway: Mattermost's response was cut off", method);
    }
    metrics.countBytes("out", bytes.byteLength);
    // Bun labels a buffered body without Content-Type as application/octet-stream, but
    // passes a small finished stream through without one.
    return upstream.headers.has("content-type") ? bytes : streamOf(bytes);
  }

  return async function forward(request, target, client) {
    const method = request.method;
    const problem = requestProblem(request, target, maxBodyBytes);
    if (problem !== null) return problem;

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new UpstreamTimeout()), upstreamTimeoutMs);
    // A client that goes away cancels the upstream request and any body still streaming.
    const onClientAbort = () => controller.abort(request.signal.reason);
    request.signal.addEventListener("abort", onClientAbort, { once: true });

    const headers = upstreamRequestHeaders(request.headers, client);
    const declaredLength = declaredBodyLength(request.headers);
    if (declaredLength !== null) {
      headers.set("content-length", String(declaredLength));
      // NOTE: bytes are counted from Content-Length, so chunked request bodies are not
      // counted; counting them would put a TransformStream on every streamed body.
      metrics.countBytes("in", declaredLength);
    }

    let upstream: Response;
    try {
      upstream = await fetch(upstreamUrl(upstreamOrigin, target), {
        method,
        headers,
        body: request.body,
        redirect: "manual",
        signal: controller.signal,
        // Bun-specific: pass compressed bodies through as they are.
        decompress: false,
        duplex: "half",
      } as RequestInit);
    } catch (error) {
      clearTimeout(timer);
      request.signal.removeEventListener("abort", onClientAbort);
      return upstreamFailure(error, controller.signal, request, target);
    }
    clearTimeout(timer);

    const body = await clientBody(method, upstream, target.path);
    if (body instanceof Response) return body;
    return new Response(body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: clientResponseHeaders(upstream.headers),
    });
  };

  /** Turns a failed fetch() into the client's response, with a log line and a metric. */
  function upstreamFailure(error: unknown, signal: AbortSignal, request: Request, target: RequestTarget): Response {
    const method = request.method;
    if (signal.reason instanceof UpstreamTimeout) {
      metrics.countUpstreamError("timeout");
      logger.error({ method, path: target.path, timeout_seconds: timeoutSeconds }, "upstream timed out");
      return gateError(504, `Gateway Timeout: Mattermost did not respond within ${timeoutSeconds} s`, method);
    }
    if (request.signal.aborted) {
      logger.debug({ method, path: target.path }, "client closed the request");
      return gateError(499, "Client Closed Request", method);
    }
    const code = String((error as { code?: string }).code ?? (error as Error).name);
    metrics.countUpstreamError("unreachable");
    logger.error({ method, path: target.path, error: code }, "upstream request failed");
    return gateError(502, "Bad Gateway: Mattermost is unreachable", method);
  }
}
