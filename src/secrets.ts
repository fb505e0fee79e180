// Pre-authentication secrets: validation of configured values and the constant-time
// check of the header value a request presents.

/** A configured secret. The label is not secret and may appear in logs and metrics. */
export interface SecretEntry {
  readonly label: string;
  readonly value: string;
  /** After this instant the secret is no longer accepted; null means it never expires. */
  readonly expiresAt: Date | null;
}

export type RejectReason = "missing" | "wrong" | "duplicated" | "expired";

export type SecretCheck =
  | { readonly ok: true; readonly label: string }
  | { readonly ok: false; readonly reason: RejectReason };

export type SecretChecker = (presented: string | null) => SecretCheck;

export const MIN_SECRET_LENGTH = 16;

/**
 * Returns why `value` cannot be a secret, or null when it can. Mobile apps trim what the
 * user types and Android drops non-ASCII header values, so a secret must be printable
 * ASCII without spaces. The message never contains the value.
 */
export function secretProblem(value: string): string | null {
  if (value.length === 0) return "is empty";
  if (/\s/.test(value)) return "contains whitespace";
  if (!/^[\x21-\x7e]+$/.test(value)) return "contains characters that are not printable ASCII";
  if (value.length < MIN_SECRET_LENGTH) {
    return `is ${value.length} characters long; the minimum is ${MIN_SECRET_LENGTH}`;
  }
  return null;
}

function sha256(value: string): Uint8Array {
  // Bun's one-shot SHA-256 costs about a third of node:crypto's createHash per call.
  return Bun.SHA256.hash(value) as Uint8Array;
}

/**
 * Builds the per-request check. The presented value is hashed to a fixed-size digest and
 * compared with every configured digest by timingSafeEqual, so the work depends neither
 * on how much of the value is right nor on which secret, if any, it equals.
 */
export function createSecretChecker(
  entries: readonly SecretEntry[],
  now: () => number = Date.now,
): SecretChecker {
  const digests = entries.map((entry) => sha256(entry.value));
  const labels = entries.map((entry) => entry.label);
  const expiries = entries.map((entry) => entry.expiresAt?.getTime() ?? Infinity);
  // Every call writes the presented value's digest into this one buffer, which saves an
  // allocation per request. The check runs synchronously, so two calls never overlap.
  const digest = new Uint8Array(32);

  return function checkSecret(presented: string | null): SecretCheck {
    if (presented === null || presented.length === 0) return { ok: false, reason: "missing" };
    // The gate joins repeated request headers with ", " (headerValue), and a valid secret
    // contains no whitespace, so this spelling can only be a repeated (or malformed) header.
    if (presented.includes(", ")) return { ok: false, reason: "duplicated" };

    Bun.SHA256.hash(presented, digest);
    let matched = -1;
    for (let index = 0; index < digests.length; index++) {
      // Every digest is compared; the branch-free select keeps the loop's work the same
      // whichever entry matches.
      const equal = crypto.timingSafeEqual(digest, digests[index]!) ? 1 : 0;
      matched = equal * index + (1 - equal) * matched;
    }
    if (matched < 0) return { ok: false, reason: "wrong" };
    if (now() >= expiries[matched]!) return { ok: false, reason: "expired" };
    return { ok: true, label: labels[matched]! };
  };
}
