// The per-request decision: whitelisted, allowed by a secret, or rejected. Start-up
// builds the matcher and the secret check once; a request only runs them.
import type { Config } from "./config.ts";
import { createSecretChecker, type RejectReason } from "./secrets.ts";
import { compileWhitelist, type Whitelist } from "./whitelist.ts";

export type Decision =
  | { readonly outcome: "whitelisted"; readonly rule: string }
  | { readonly outcome: "allowed"; readonly label: string }
  | { readonly outcome: "rejected"; readonly reason: RejectReason };

/** The Mattermost WebSocket route, which `--allow websocket` exempts for upgrades only. */
export const WEBSOCKET_PATHS: ReadonlySet<string> = new Set(["/api/v4/websocket", "/api/v4/websocket/"]);

export interface Gate {
  readonly whitelist: Whitelist;
  readonly websocketExempt: boolean;
  /**
   * Decides on a request from its path (query excluded), the secret header's value as
   * Bun reports it (null when absent), and whether it requests a WebSocket upgrade.
   */
  decide(path: string, presentedSecret: string | null, isUpgrade: boolean): Decision;
}

export function createGate(config: Pick<Config, "secrets" | "groups" | "ssoServices" | "websocketExempt">): Gate {
  const whitelist = compileWhitelist({ groups: config.groups, ssoServices: config.ssoServices });
  const checkSecret = createSecretChecker(config.secrets);
  const websocketExempt = config.websocketExempt;

  return Object.freeze({
    whitelist,
    websocketExempt,
    decide(path: string, presentedSecret: string | null, isUpgrade: boolean): Decision {
      // The whitelist covers plain HTTP only: no whitelisted route is a WebSocket, so an
      // upgrade needs the secret unless `--allow websocket` exempts Mattermost's route.
      if (isUpgrade) {
        if (websocketExempt && WEBSOCKET_PATHS.has(path)) return { outcome: "whitelisted", rule: "websocket-upgrade" };
      } else {
        const rule = whitelist.match(path);
        if (rule !== null) return { outcome: "whitelisted", rule: rule.name };
      }
      const check = checkSecret(presentedSecret);
      return check.ok ? { outcome: "allowed", label: check.label } : { outcome: "rejected", reason: check.reason };
    },
  });
}
