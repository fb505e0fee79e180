// What the gate's server does with a raw request target, without the network: the parser
// hands the raw target over, parseRequestTarget splits it, the gate decides, and
// isForwardable checks that the path is in canonical form. Property tests run this on
// generated targets; the wire tests check the real server.
import type { Config } from "../../src/config.ts";
import { createGate, type Gate } from "../../src/gate.ts";
import { isForwardable, parseRequestTarget, targetString } from "../../src/target.ts";
import { TEST_SECRET } from "./gate-process.ts";
import type { ModelOptions } from "./reference-model.ts";

export type GateOutcome =
  | { readonly kind: "bad-request" }
  | { readonly kind: "secret-required" }
  /** Forwarded; `target` is the path and query sent upstream. */
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

/**
 * Runs a raw request target through parseRequestTarget, the gate and the forwarding check,
 * without the secret, or with the right one when `withSecret` is set.
 */
export function gateOutcome(gate: Gate, rawTarget: string, withSecret = false): GateOutcome {
  const parsed = parseRequestTarget(rawTarget);
  if (!parsed.ok) return { kind: "bad-request" };
  const decision = gate.decide(parsed.target.path, withSecret ? TEST_SECRET : null, false);
  if (decision.outcome === "rejected") return { kind: "secret-required" };
  if (!isForwardable(parsed.target)) return { kind: "bad-request" };
  const rule = decision.outcome === "whitelisted" ? decision.rule : `secret ${decision.label}`;
  return { kind: "forwarded", rule, target: targetString(parsed.target) };
}
