// The fixed responses the gate sends itself. None of them echoes request data.

export const REJECTION_BODY = "Forbidden: Invalid pre-authentication secret";

/**
 * The pre-auth rejection that Mattermost's desktop and mobile apps recognise: 403 with
 * `x-reject-reason: pre-auth`. The header name goes out in lower case, because mobile
 * 2.34 to 2.39 looked it up case-sensitively. No cache may keep it.
 */
export function rejection(method: string): Response {
  return new Response(method === "HEAD" ? null : REJECTION_BODY, {
    status: 403,
    headers: {
      "x-reject-reason": "pre-auth",
      "cache-control": "no-store",
      "content-type": "text/plain; charset=utf-8",
    },
  });
}

/** A short plain-text error from the gate itself, never carrying `x-reject-reason`. */
export function gateError(status: number, message: string, method: string): Response {
  return new Response(method === "HEAD" ? null : `${message}\n`, {
    status,
    headers: { "cache-control": "no-store", "content-type": "text/plain; charset=utf-8" },
  });
}
