// What the gate's server does with a raw request target, without the network: Bun parses
// the target into request.url, parseRequestUrl splits it, and the gate decides. Property
// tests run this on generated targets; the wire tests check the real server.
import type { Config } from "../../src/config.ts";
import { createGate, type Gate } from "../../src/gate.ts";
import { parseRequestUrl } from "../../src/target.ts";
import { TEST_SECRET } from "./gate-process.ts";
import type { ModelOptions } from "./reference-model.ts";

/**
 * How a raw target becomes request.url, or null when the server responds with 400 before
 * the gate runs.
 */
export interface UrlModel {
  readonly name: string;
  toRequestUrl(target: string): string | null;
}

function parseOrNull(input: string, base?: string): string | null {
  try {
    return new URL(input, base).href;
  } catch {
    return null;
  }
}

/** The WHATWG parse against a base URL, as `preauth-gate explain` does it. */
export const WHATWG_WITH_BASE: UrlModel = {
  name: "new URL(target, base)",
  toRequestUrl: (target) => parseOrNull(target, "http://gate.test"),
};

/**
 * Bun.serve 1.4.5 as measured: an origin-form target is appended to "http://HOST" and
 * parsed, so "//x" stays a path. Other forms are left to the wire tests.
 */
export const BUN_SERVE: UrlModel = {
  name: "Bun.serve request.url",
  toRequestUrl: (target) => (target.startsWith("/") ? parseOrNull(`http://gate.test${target}`) : null),
};

export const URL_MODELS: readonly UrlModel[] = [WHATWG_WITH_BASE, BUN_SERVE];

export type GateOutcome =
  | { readonly kind: "bad-request" }
  | { readonly kind: "secret-required" }
  /** Forwarded without the secret; `target` is the path and query sent upstream. */
  | { readonly kind: "forwarded"; readonly rule: string; readonly target: string };

/** Builds the gate for `options` with one configured secret. */
export function gateFor(options: ModelOptions): Gate {
  const config: Pick<Config, "secrets" | "groups" | "ssoServices" | "websocketExempt"> = {
    secrets: [{ label: "test", value: TEST_SECRET, expiresAt: null }],
    groups: options.groups,
    ssoServices: options.services,
    websocketExempt: false,
  };
  return createGate(config);
}

/** Runs a request without the secret through the URL model, parseRequestUrl and the gate. */
export function gateOutcome(gate: Gate, target: string, urlModel: UrlModel): GateOutcome {
  const url = urlModel.toRequestUrl(target);
  if (url === null) return { kind: "bad-request" };
  const parsed = parseRequestUrl(url);
  if (!parsed.ok) return { kind: "bad-request" };

  const decision = gate.decide(parsed.target.path, null, false);
  if (decision.outcome !== "whitelisted") return { kind: "secret-required" };
  const { path, query } = parsed.target;
  return { kind: "forwarded", rule: decision.rule, target: query === null ? path : `${path}?${query}` };
}
