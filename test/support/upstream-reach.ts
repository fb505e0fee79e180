// Judges one request from the stand-in Mattermost's log: did a request sent without the
// secret reach anything outside the whitelist?
import { mattermostView, whitelistedBy, type ModelOptions } from "./reference-model.ts";
import { printable } from "./request-targets.ts";
import type { ReceivedRequest } from "./stand-in-mattermost.ts";

/**
 * Describes how `request` reached Mattermost outside the whitelist, or returns null when
 * it stayed inside. A request stays inside when:
 * - the stand-in answered 301 ("redirect"), so no route ran;
 * - or the decoded path is whitelisted by the reference model under `options`, and the
 *   route that ran is the whitelist rule of the same name, or no route ran (404). This
 *   covers an unknown file under /static/ and a method that a whitelisted route does not
 *   take, such as GET on the POST-only notification acknowledgement.
 * Anything else, including a 404 or 400 for a path outside the whitelist, means the gate
 * forwarded a request that needed the secret.
 */
export function reachOutsideWhitelist(request: ReceivedRequest, options: ModelOptions): string | null {
  if (request.route === "redirect" && request.status === 301) return null;
  const view = mattermostView(request.target);
  const rule = view.kind === "route" ? whitelistedBy(view.path, options) : null;
  if (rule !== null && (request.route === null || request.route === rule)) return null;
  const reached = request.route === null ? "no route" : `route ${request.route}`;
  return `${request.method} ${printable(request.target)} reached ${reached} with status ${request.status}`;
}
