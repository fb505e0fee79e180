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

export function createForwarder(options: ProxyOptions): Forwarder {
  const { upstreamOrigin, upstreamTimeoutMs, maxBodyBytes, logger, metrics } = options;
  const timeoutSeconds = upstreamTimeoutMs / 1000;

  return async function forward(request, target, client) {
    const method = request.method;
    if (!isForwardable(target.path)) {
      return gateError(400, "Bad Request: the request path must not start with //", method);
    }
    const declaredLength = Number(request.headers.get("content-length") ?? 0);
    if (declaredLength > maxBodyBytes) {
      return gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, method);
    }

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new UpstreamTimeout()), upstreamTimeoutMs);
    // A client that goes away cancels the upstream request and any body still streaming.
    const onClientAbort = () => controller.abort(request.signal.reason);
    request.signal.addEventListener("abort", onClientAbort, { once: true });

    let upstream: Response;
    try {
      upstream = await fetch(upstreamUrl(upstreamOrigin, target), {
        method,
        headers: upstreamRequestHeaders(request.headers, client),
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
      if (controller.signal.reason instanceof UpstreamTimeout) {
        metrics.countUpstreamError("timeout");
        logger.error({ method, path: target.path, timeout_seconds: timeoutSeconds }, "upstream timed out");
        return gateError(504, `Gateway Timeout: Mattermost did not answer within ${timeoutSeconds} s`, method);
      }
      if (request.signal.aborted) {
        logger.info({ method, path: target.path }, "client closed the request");
        return gateError(499, "Client Closed Request", method);
      }
      const code = (error as { code?: string }).code ?? (error as Error).name;
      metrics.countUpstreamError("unreachable");
      logger.error({ method, path: target.path, error: code }, "upstream request failed");
      return gateError(502, "Bad Gateway: Mattermost is unreachable", method);
    }
    clearTimeout(timer);

    let body: ReadableStream<Uint8Array> | ArrayBuffer | null = upstream.body;
    if (method === "HEAD" || NULL_BODY_STATUSES.has(upstream.status)) {
      body = null;
    } else if (Number(upstream.headers.get("content-length") ?? Infinity) <= BUFFERED_RESPONSE_LIMIT) {
      try {
        body = await upstream.arrayBuffer();
      } catch (error) {
        metrics.countUpstreamError("cut-off");
        logger.error({ method, path: target.path, error: (error as Error).name }, "upstream response body failed");
        return gateError(502, "Bad Gateway: Mattermost's response was cut off", method);
      }
    }
    // NOTE: bytes are counted from Content-Length, so chunked bodies are not counted;
    // counting them would put a TransformStream on every streamed body.
    if (declaredLength > 0) metrics.countBytes("in", declaredLength);
    const responseLength = Number(upstream.headers.get("content-length") ?? 0);
    if (body !== null && responseLength > 0) metrics.countBytes("out", responseLength);
    // NOTE: a larger body reaches the client with chunked framing and no Content-Length,
    // because Bun.serve cannot stream a body of declared length.
    return new Response(body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: clientResponseHeaders(upstream.headers),
    });
  };
}
