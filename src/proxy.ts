// HTTP forwarding to Mattermost with fetch(): bodies stream both ways, redirects go back
// to the client, and compressed bodies stay compressed.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { clientResponseHeaders, toUpstreamHeaders, type ClientInfo } from "./headers.ts";
import { gateError, sendFixed, type FixedResponse } from "./responses.ts";
import { isForwardable, upstreamUrl, type RequestTarget } from "./target.ts";

export interface ProxyOptions {
  readonly upstreamOrigin: string;
  readonly upstreamTimeoutMs: number;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** One request to forward: the client's request and response, and what the gate parsed. */
export interface ForwardRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The client's headers, repeated ones joined with ", ". Forwarding changes them in place. */
  readonly headers: Headers;
  readonly target: RequestTarget;
  readonly client: ClientInfo;
  /** Called once the response head is sent or the request has failed. */
  readonly onResponseStart: () => void;
}

/**
 * Largest response body of declared length that is read whole and sent with one write.
 * Larger bodies stream with backpressure; both keep Content-Length.
 */
const SMALL_BODY_BYTES = 64 * 1024;

/** Statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

class UpstreamTimeout extends Error {}
class BodyTooLarge extends Error {}
class ClientGone extends Error {}

export type Forwarder = (request: ForwardRequest) => Promise<void>;

/** Methods the gate never forwards: Mattermost serves neither, and TRACE echoes credentials. */
const REJECTED_METHODS = new Set(["CONNECT", "TRACE"]);

/**
 * Returns the request body's declared length, or null when the request has no
 * Content-Length. Repeated headers arrive joined with ", ", which RFC 9112 section 6.3
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
function requestProblem(
  method: string,
  declaredLength: number | null,
  target: RequestTarget,
  maxBodyBytes: number,
): FixedResponse | null {
  if (!isForwardable(target)) {
    return gateError(400, "Bad Request: the request target is not in canonical form", method);
  }
  if (REJECTED_METHODS.has(method)) {
    return gateError(405, `Method Not Allowed: ${method} is not forwarded`, method);
  }
  if (Number.isNaN(declaredLength)) return gateError(400, "Bad Request: invalid Content-Length", method);
  if (declaredLength !== null && declaredLength > maxBodyBytes) {
    return gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, method);
  }
  return null;
}

/** Resolves when the response can take more data, or when the client has gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

export function createForwarder(options: ProxyOptions): Forwarder {
  const { upstreamOrigin, upstreamTimeoutMs, maxBodyBytes, logger, metrics } = options;
  const timeoutSeconds = upstreamTimeoutMs / 1000;

  /**
   * Streams the client's body, counting bytes so that a chunked body over the limit
   * aborts the upstream request. A declared length was checked before.
   */
  async function* requestBody(req: IncomingMessage, controller: AbortController): AsyncGenerator<Uint8Array> {
    let received = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      received += chunk.byteLength;
      if (received > maxBodyBytes) {
        controller.abort(new BodyTooLarge());
        return;
      }
      yield chunk;
    }
  }

  return async function forward(request) {
    const { req, res, headers: incoming, target, client, onResponseStart } = request;
    const method = req.method ?? "GET";
    const declaredLength = declaredBodyLength(incoming);
    const problem = requestProblem(method, declaredLength, target, maxBodyBytes);
    if (problem !== null) {
      onResponseStart();
      sendFixed(res, problem);
      return;
    }

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new UpstreamTimeout()), upstreamTimeoutMs);
    // A client that goes away cancels the upstream request and any body still streaming.
    const onClientClose = () => {
      if (!res.writableFinished) controller.abort(new ClientGone());
    };
    res.on("close", onClientClose);

    const hasBody = (declaredLength !== null && declaredLength > 0) || incoming.has("transfer-encoding");
    // The client's headers are not needed after this, so they become the upstream ones.
    const headers = toUpstreamHeaders(incoming, client);
    if (declaredLength !== null) {
      headers.set("content-length", String(declaredLength));
      // NOTE: bytes in are counted from Content-Length, so chunked request bodies are not
      // counted; counting them would add work to every streamed upload.
      metrics.countBytes("in", declaredLength);
    }
    const body = hasBody && method !== "GET" && method !== "HEAD" ? requestBody(req, controller) : undefined;

    let upstream: Response;
    try {
      upstream = await fetch(upstreamUrl(upstreamOrigin, target), {
        method,
        headers,
        body,
        redirect: "manual",
        signal: controller.signal,
        // Bun-specific: pass compressed bodies through as they are.
        decompress: false,
        duplex: "half",
      } as RequestInit);
    } catch (error) {
      clearTimeout(timer);
      res.off("close", onClientClose);
      onResponseStart();
      const failure = upstreamFailure(error, controller.signal, method, target);
      if (!res.destroyed) sendFixed(res, failure);
      return;
    }
    clearTimeout(timer);

    const hasNoBody = method === "HEAD" || NULL_BODY_STATUSES.has(upstream.status) || upstream.body === null;
    const length = Number(upstream.headers.get("content-length") ?? Number.NaN);
    if (hasNoBody || length <= SMALL_BODY_BYTES) {
      await sendWhole(request, upstream, hasNoBody, method);
      res.off("close", onClientClose);
      return;
    }
    res.writeHead(upstream.status, upstream.statusText || undefined, clientResponseHeaders(upstream.headers));
    onResponseStart();
    try {
      for await (const chunk of upstream.body as unknown as AsyncIterable<Uint8Array>) {
        metrics.countBytes("out", chunk.byteLength);
        if (!res.write(chunk)) await drained(res);
        if (res.destroyed) break;
      }
      res.end();
    } catch (error) {
      const reason = controller.signal.reason;
      if (reason instanceof ClientGone) {
        logger.debug({ method, path: target.path }, "client closed the request");
      } else if (reason instanceof BodyTooLarge) {
        // Mattermost responded before the whole body arrived, so 413 can no longer be sent.
        logger.warn({ method, path: target.path, max_body_bytes: maxBodyBytes }, "request body over the size limit");
      } else {
        // The head is already sent, so the only way to tell the client is to cut the
        // connection before the body is complete.
        metrics.countUpstreamError("cut-off");
        logger.error({ method, path: target.path, error: (error as Error).name }, "upstream response body failed");
      }
      res.destroy();
    } finally {
      res.off("close", onClientClose);
    }
  };

  /**
   * Sends a response without a body, or with a small body read whole first: one write
   * costs less than streaming, and a body cut off by Mattermost still becomes a 502.
   */
  async function sendWhole(request: ForwardRequest, upstream: Response, hasNoBody: boolean, method: string): Promise<void> {
    const { res, target, onResponseStart } = request;
    let body: Buffer | undefined;
    if (!hasNoBody) {
      try {
        body = Buffer.from(await upstream.arrayBuffer());
      } catch (error) {
        onResponseStart();
        metrics.countUpstreamError("cut-off");
        logger.error({ method, path: target.path, error: (error as Error).name }, "upstream response body failed");
        if (!res.destroyed) sendFixed(res, gateError(502, "Bad Gateway: Mattermost's response was cut off", method));
        return;
      }
      metrics.countBytes("out", body.byteLength);
    }
    res.writeHead(upstream.status, upstream.statusText || undefined, clientResponseHeaders(upstream.headers));
    onResponseStart();
    res.end(body);
  }

  /** Turns a failed fetch() into the client's response, with a log line and a metric. */
  function upstreamFailure(error: unknown, signal: AbortSignal, method: string, target: RequestTarget): FixedResponse {
    if (signal.reason instanceof BodyTooLarge) {
      return gateError(413, `Payload Too Large: the limit is ${maxBodyBytes} bytes`, method);
    }
    if (signal.reason instanceof UpstreamTimeout) {
      metrics.countUpstreamError("timeout");
      logger.error({ method, path: target.path, timeout_seconds: timeoutSeconds }, "upstream timed out");
      return gateError(504, `Gateway Timeout: Mattermost did not respond within ${timeoutSeconds} s`, method);
    }
    if (signal.reason instanceof ClientGone) {
      logger.debug({ method, path: target.path }, "client closed the request");
      return gateError(499, "Client Closed Request", method);
    }
    const code = String((error as { code?: string }).code ?? (error as Error).name);
    metrics.countUpstreamError("unreachable");
    logger.error({ method, path: target.path, error: code }, "upstream request failed");
    return gateError(502, "Bad Gateway: Mattermost is unreachable", method);
  }
}
