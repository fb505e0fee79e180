// Property tests of the whitelist, the secret check and the forwarded target, each against
// the plain reference model in test/support/reference-model.ts.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { createSecretChecker, type SecretEntry } from "../src/secrets.ts";
import { isForwardable, parseRequestTarget, targetString } from "../src/target.ts";
import { compileWhitelist } from "../src/whitelist.ts";
import { gateFor, gateOutcome, type GateOutcome } from "./support/gate-pipeline.ts";
import {
  isCanonicalPath,
  mattermostView,
  nginxView,
  nginxWhitelistedBy,
  staysInWhitelist,
  whitelistedBy,
  type ModelOptions,
} from "./support/reference-model.ts";
import {
  anyTarget,
  canonicalPath,
  modelOptions,
  printable,
  Probe,
  whitelistedPath,
  withQuery,
} from "./support/request-targets.ts";

const ALL_GROUPS: ModelOptions = { groups: ["saml", "openid", "oauth"], services: [] };

describe("whitelist soundness", () => {
  test("request let through reaches only whitelisted routes", () => {
    fc.assert(
      fc.property(modelOptions, anyTarget, (options, probe) => {
        const outcome = gateOutcome(gateFor(options), probe.target);
        if (outcome.kind !== "forwarded") return;
        expect(staysInWhitelist(mattermostView(outcome.target), options, whitelistedBy)).toBe(true);
        expect(staysInWhitelist(nginxView(outcome.target), options, nginxWhitelistedBy)).toBe(true);
      }),
      { numRuns: 20_000 },
    );
  });

  test("forwarded path is canonical", () => {
    fc.assert(
      fc.property(anyTarget, (probe) => {
        const outcome = gateOutcome(gateFor(ALL_GROUPS), probe.target);
        if (outcome.kind !== "forwarded") return;
        expect(isCanonicalPath(outcome.target.split("?")[0]!)).toBe(true);
      }),
      { numRuns: 20_000 },
    );
  });

  test("target without the secret is let through only as sent", () => {
    fc.assert(
      fc.property(anyTarget, (probe) => {
        const outcome = gateOutcome(gateFor(ALL_GROUPS), probe.target);
        if (outcome.kind !== "forwarded") return;
        // An origin-form target is forwarded exactly; absolute-form keeps its path and query.
        if (probe.target.startsWith("/")) expect(outcome.target).toBe(probe.target);
        else expect(probe.target.endsWith(outcome.target)).toBe(true);
      }),
      { numRuns: 20_000 },
    );
  });

  test("target with the secret is forwarded only in canonical form", () => {
    fc.assert(
      fc.property(anyTarget, (probe) => {
        const outcome = gateOutcome(gateFor(ALL_GROUPS), probe.target, true);
        if (outcome.kind !== "forwarded") return;
        const path = outcome.target.split("?")[0]!;
        expect(new URL(`http://gate.invalid${path}`).pathname).toBe(path);
        expect(path.startsWith("//")).toBe(false);
      }),
      { numRuns: 20_000 },
    );
  });
});

describe("whitelist completeness", () => {
  const optionsAndTarget = modelOptions.chain((options) =>
    whitelistedPath(options)
      .chain(withQuery)
      .map((target) => ({ options, probe: new Probe(target) })),
  );

  test("every documented target passes without the secret", () => {
    fc.assert(
      fc.property(optionsAndTarget, ({ options, probe }) => {
        const path = probe.target.split("?")[0]!;
        const expectedRule = whitelistedBy(path, options);
        expect(expectedRule).not.toBeNull();
        const outcome = gateOutcome(gateFor(options), probe.target);
        expect(outcome).toEqual({ kind: "forwarded", rule: expectedRule!, target: probe.target });
      }),
      { numRuns: 10_000 },
    );
  });
});

describe("compiled matcher", () => {
  test("agrees with the reference model on canonical paths", () => {
    fc.assert(
      fc.property(modelOptions, canonicalPath, (options, path) => {
        const whitelist = compileWhitelist({ groups: options.groups, ssoServices: options.services });
        expect(whitelist.match(path)?.name ?? null).toBe(whitelistedBy(path, options));
      }),
      { numRuns: 20_000 },
    );
  });

  test("never matches a path that is not canonical", () => {
    fc.assert(
      fc.property(modelOptions, anyTarget, (options, probe) => {
        const path = probe.target.split("?")[0]!;
        fc.pre(!isCanonicalPath(path));
        const whitelist = compileWhitelist({ groups: options.groups, ssoServices: options.services });
        expect(whitelist.match(path)).toBeNull();
      }),
      { numRuns: 20_000 },
    );
  });
});

/** Secrets of the documented shape (base64 of 32 bytes) and other printable ASCII ones. */
const secretValue = fc.oneof(
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => Buffer.from(bytes).toString("base64")),
  fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((code) => String.fromCharCode(code)), minLength: 16, maxLength: 48 }),
);

const secretEntries: fc.Arbitrary<SecretEntry[]> = fc
  .uniqueArray(secretValue, { minLength: 1, maxLength: 4 })
  .map((values) => values.map((value, index) => ({ label: `secret-${index}`, value, expiresAt: null })));

/** Characters a person or an attacker might put in place of a secret's character. */
function lookAlikes(char: string): string[] {
  const code = char.charCodeAt(0);
  const swaps: Record<string, string> = { "0": "O", O: "0", "1": "l", l: "1", I: "l", "5": "S", S: "5", "+": "-", "/": "_" };
  return [
    swaps[char] ?? "",
    String.fromCharCode(code + 0xfee0), // fullwidth form
    `${char}\u0301`, // combining accent
    String.fromCharCode(code + 0x100), // a character with the same low byte
    "\u0430", // Cyrillic a
  ].filter((alike) => alike !== "" && alike !== char);
}

/** Generates a value presented instead of a secret: a near miss of one secret or of the list. */
function nearMissSecret(secrets: readonly string[]): fc.Arbitrary<string> {
  const configuredSecret = fc.constantFrom(...secrets);
  return fc.oneof(
    configuredSecret.chain((secret) => fc.nat({ max: secret.length - 1 }).map((length) => secret.slice(0, length))),
    fc.tuple(configuredSecret, fc.string({ minLength: 1, maxLength: 4 })).map(([secret, extra]) => secret + extra),
    fc.tuple(configuredSecret, fc.nat()).map(([secret, index]) => {
      const position = index % secret.length;
      const char = secret[position]!;
      const swapped = char === char.toUpperCase() ? char.toLowerCase() : char.toUpperCase();
      return secret.slice(0, position) + swapped + secret.slice(position + 1);
    }),
    fc.tuple(configuredSecret, fc.nat(), fc.nat()).map(([secret, index, pick]) => {
      const position = index % secret.length;
      const alikes = lookAlikes(secret[position]!);
      return secret.slice(0, position) + alikes[pick % alikes.length]! + secret.slice(position + 1);
    }),
    fc.tuple(configuredSecret, fc.constantFrom(" ", "\t", "\u00a0", "\r\n")).map(([secret, space]) => `${space}${secret}${space}`),
    fc.tuple(configuredSecret, fc.constantFrom(" ", "\t")).map(([secret, space]) => `${secret}${space}`),
    fc.constant(""),
    configuredSecret.map((secret) => secret + secret),
    fc.tuple(configuredSecret, configuredSecret, fc.constantFrom(", ", ",", " ,")).map(([first, second, comma]) => `${first}${comma}${second}`),
  );
}

/** A secret header value presented to a checker, printed as the header it stands for. */
class SecretProbe {
  constructor(
    readonly entries: readonly SecretEntry[],
    readonly presented: string | null,
  ) {}

  toString(): string {
    const configured = this.entries.map((entry) => `"${printable(entry.value)}"`).join(", ");
    const header = this.presented === null ? "no header" : `header "${printable(this.presented)}"`;
    return `${header} against secrets [${configured}]`;
  }

  [fc.toStringMethod](): string {
    return this.toString();
  }
}

describe("secret check", () => {
  test("accepts each configured secret with its label", () => {
    fc.assert(
      fc.property(secretEntries, (entries) => {
        const check = createSecretChecker(entries);
        for (const entry of entries) expect(check(entry.value)).toEqual({ ok: true, label: entry.label });
      }),
      { numRuns: 2_000 },
    );
  });

  test("rejects near misses of the configured secrets", () => {
    const probes = secretEntries.chain((entries) =>
      nearMissSecret(entries.map((entry) => entry.value)).map((presented) => new SecretProbe(entries, presented)),
    );
    fc.assert(
      fc.property(probes, ({ entries, presented }) => {
        const configured = entries.find((entry) => entry.value === presented);
        const result = createSecretChecker(entries)(presented);
        if (configured === undefined) expect(result.ok).toBe(false);
        else expect(result).toEqual({ ok: true, label: configured.label });
      }),
      { numRuns: 10_000 },
    );
  });

  test("accepts arbitrary strings only when configured", () => {
    const presented = fc.oneof(
      fc.string({ unit: "binary", maxLength: 64 }),
      fc.string({ unit: "grapheme", maxLength: 64 }),
      fc.constant(null),
    );
    const probes = fc.tuple(secretEntries, presented).map(([entries, value]) => new SecretProbe(entries, value));
    fc.assert(
      fc.property(probes, ({ entries, presented }) => {
        const result = createSecretChecker(entries)(presented);
        expect(result.ok).toBe(entries.some((entry) => entry.value === presented));
      }),
      { numRuns: 10_000 },
    );
  });
});

describe("forwarded target", () => {
  test("the request line sent upstream carries the matched path and the query", () => {
    fc.assert(
      fc.property(anyTarget, (probe) => {
        const parsed = parseRequestTarget(probe.target);
        if (!parsed.ok) return;
        const { path, query } = parsed.target;
        expect(targetString(parsed.target)).toBe(query === null ? path : `${path}?${query}`);
        if (!isForwardable(parsed.target)) return;
        // A forwardable path is one that a URL parser, like Mattermost's router, leaves as it is.
        expect(new URL(`http://mattermost.internal${path}`).pathname).toBe(path);
      }),
      { numRuns: 10_000 },
    );
  });

  test("parseRequestTarget splits any string without throwing", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 60 }), (rest) => {
        const raw = `/${rest}`;
        const parsed = parseRequestTarget(raw);
        if (!parsed.ok) {
          expect(raw.includes("#")).toBe(true);
          return;
        }
        const { path, query } = parsed.target;
        // What is forwarded is the target itself: nothing added, nothing dropped.
        expect(`${path}${query === null ? "" : `?${query}`}`).toBe(raw);
        expect(path.includes("?")).toBe(false);
      }),
      { numRuns: 10_000 },
    );
  });

  test("isForwardable agrees with a full URL parse", () => {
    fc.assert(
      fc.property(anyTarget, (probe) => {
        const parsed = parseRequestTarget(probe.target);
        if (!parsed.ok) return;
        const path = parsed.target.path;
        let unchanged: boolean;
        try {
          unchanged = new URL(`http://gate.invalid${path}`).pathname === path && !path.startsWith("//");
        } catch {
          unchanged = false;
        }
        expect(isForwardable(parsed.target)).toBe(unchanged);
      }),
      { numRuns: 20_000 },
    );
  });

  const otherForms = ["*", "mm.test:443", "example.test/x", "ftp://h/x", "", "HTTP:/x"];
  for (const raw of otherForms) {
    test(`target ${JSON.stringify(raw)} is malformed`, () => {
      expect(parseRequestTarget(raw)).toEqual({ ok: false, problem: "malformed" });
    });
  }

  test("absolute-form keeps only path and query", () => {
    expect(parseRequestTarget("http://elsewhere.test:81/static/a.js?v=1")).toEqual({
      ok: true,
      target: { path: "/static/a.js", query: "v=1" },
    });
    expect(parseRequestTarget("HTTPS://elsewhere.test")).toEqual({ ok: true, target: { path: "/", query: null } });
    expect(parseRequestTarget("http://elsewhere.test?q")).toEqual({ ok: true, target: { path: "/", query: "q" } });
  });
});

type Expected = "passes" | "needs the secret" | "is a bad request";

interface ExampleCase {
  readonly rule: string;
  readonly target: string;
  readonly expected: Expected;
  readonly options?: ModelOptions;
}

// Each matching rule in the user's terms, with an allowed and a denied case.
const EXAMPLES: readonly ExampleCase[] = [
  { rule: "query ignored", target: "/api/v4/config/client?format=old", expected: "passes" },
  { rule: "query ignored", target: "/api/v4/system/ping?x=/static/", expected: "needs the secret" },
  { rule: "query ignored", target: "/api/v4/users/me?/../../static/x", expected: "needs the secret" },
  { rule: "trailing slash", target: "/static/images/", expected: "passes" },
  { rule: "trailing slash", target: "/api/v4/config/client/", expected: "needs the secret" },
  { rule: "trailing slash", target: "/login/desktop/", expected: "needs the secret" },
  { rule: "trailing slash", target: "/static", expected: "needs the secret" },
  { rule: "doubled slash", target: "/static/app.js?v=//x", expected: "passes" },
  { rule: "doubled slash", target: "/static//app.js", expected: "needs the secret" },
  { rule: "doubled slash", target: "//static/app.js", expected: "needs the secret" },
  { rule: "doubled slash", target: "/api/v4//config/client", expected: "needs the secret" },
  { rule: "case", target: "/static/Images/Logo.PNG", expected: "passes" },
  { rule: "case", target: "/oauth/GitLab/complete", expected: "passes" },
  { rule: "case", target: "/Static/app.js", expected: "needs the secret" },
  { rule: "case", target: "/API/v4/config/client", expected: "needs the secret" },
  { rule: "case", target: "/oauth/gitlab/Complete", expected: "needs the secret" },
  { rule: "dot segments", target: "/static/./app.js", expected: "needs the secret" },
  { rule: "dot segments", target: "/api/v4/users/../config/client", expected: "needs the secret" },
  { rule: "dot segments", target: "/static//../app.js", expected: "needs the secret" },
  { rule: "dot segments", target: "/static/../api/v4/users/me", expected: "needs the secret" },
  { rule: "dot segments", target: "/static/%2e%2e/api/v4/users/me", expected: "needs the secret" },
  { rule: "dot segments", target: "/static/.%2E/.%2e/api/v4/users/me", expected: "needs the secret" },
  { rule: "dot segments", target: "/static/%c0%ae%c0%ae/api/v4/users/me", expected: "needs the secret" },
  { rule: "encoded separators", target: "/static/app.js?path=%2f..%2f", expected: "passes" },
  { rule: "encoded separators", target: "/static/..%2fapi/v4/users/me", expected: "needs the secret" },
  { rule: "encoded separators", target: "/static/a%2fb", expected: "needs the secret" },
  { rule: "encoded separators", target: "/static/..%5capi/v4/users/me", expected: "needs the secret" },
  { rule: "encoded separators", target: "/static/app.js%00", expected: "needs the secret" },
  { rule: "backslash", target: "/static\\app.js", expected: "needs the secret" },
  { rule: "backslash", target: "/static\\..\\api/v4/users/me", expected: "needs the secret" },
  { rule: "semicolon", target: "/static/app.js?a=1;b=2", expected: "passes" },
  { rule: "semicolon", target: "/static/app.js;x=1", expected: "needs the secret" },
  { rule: "semicolon", target: "/login/desktop;", expected: "needs the secret" },
  { rule: "fragment", target: "/static/app.js?x=%23y", expected: "passes" },
  { rule: "fragment", target: "/api/v4/config/client#x", expected: "is a bad request" },
  { rule: "SSO group", target: "/login/sso/saml", expected: "passes", options: { groups: ["saml"], services: [] } },
  { rule: "SSO group", target: "/login/sso/saml", expected: "needs the secret", options: { groups: [], services: [] } },
  { rule: "SSO service", target: "/oauth/gitlab/login", expected: "passes", options: { groups: ["openid"], services: ["gitlab"] } },
  { rule: "SSO service", target: "/oauth/google/login", expected: "needs the secret", options: { groups: ["openid"], services: ["gitlab"] } },
  { rule: "SSO service", target: "/signup/gitlab/complete", expected: "passes", options: { groups: ["oauth"], services: ["gitlab"] } },
  { rule: "SSO service", target: "/signup/gitlab2/complete", expected: "needs the secret", options: { groups: ["oauth"], services: ["gitlab"] } },
];

function describeOutcome(outcome: GateOutcome): Expected {
  if (outcome.kind === "forwarded") return "passes";
  return outcome.kind === "secret-required" ? "needs the secret" : "is a bad request";
}

describe("whitelist rules by example", () => {
  for (const example of EXAMPLES) {
    test(`${example.rule}: ${example.target} ${example.expected}`, () => {
      const outcome = gateOutcome(gateFor(example.options ?? ALL_GROUPS), example.target);
      expect(describeOutcome(outcome)).toBe(example.expected);
      if (outcome.kind === "forwarded") expect(outcome.target).toBe(example.target);
    });
  }
});
