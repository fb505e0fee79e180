// Command-line parsing and help text. Flags map one to one onto OPTIONS.
import { parseArgs } from "node:util";
import { OPTIONS } from "./options.ts";

export const COMMANDS = ["serve", "check", "explain", "secret", "version", "help"] as const;
export type Command = (typeof COMMANDS)[number];

export interface ParsedCommandLine {
  readonly command: Command;
  readonly flags: Record<string, string[]>;
  readonly positionals: readonly string[];
  readonly withSecret: boolean;
}

/** Flags that would put a secret in argv, where every local user can read it. */
const FORBIDDEN_SECRET_FLAGS = ["--secret", "--preauth-secret"];

export class UsageError extends Error {
  override name = "UsageError";
}

export function parseCommandLine(argv: readonly string[]): ParsedCommandLine {
  for (const arg of argv) {
    const flag = arg.split("=")[0]!;
    if (FORBIDDEN_SECRET_FLAGS.includes(flag)) {
      throw new UsageError(
        `${flag} is not accepted, because the command line is visible to every local user; ` +
          "put the secret in a file and pass --secret-file PATH, or set PREAUTH_GATE_SECRET",
      );
    }
  }
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
    "with-secret": { type: "boolean" },
  };
  for (const spec of OPTIONS) options[spec.flag] = { type: "string", multiple: true };

  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}; run preauth-gate --help for the options`);
  }
  const values = parsed.values as Record<string, unknown>;
  const [first, ...rest] = parsed.positionals;
  let command: Command = "serve";
  let positionals = parsed.positionals;
  // --help and --version win over a command and its arguments, so `check --help` works.
  if (values.help) return { command: "help", flags: {}, positionals: [], withSecret: false };
  if (values.version) return { command: "version", flags: {}, positionals: [], withSecret: false };
  if (first !== undefined) {
    if (!(COMMANDS as readonly string[]).includes(first)) {
      throw new UsageError(`unknown command "${first}"; expected one of ${COMMANDS.join(", ")}`);
    }
    command = first as Command;
    positionals = rest;
  }
  checkPositionals(command, positionals);
  const flags: Record<string, string[]> = {};
  for (const spec of OPTIONS) {
    const value = values[spec.flag];
    if (Array.isArray(value)) flags[spec.flag] = value as string[];
  }
  return { command, flags, positionals, withSecret: values["with-secret"] === true };
}

/**
 * Rejects words after the command, because only explain takes one (its request target).
 * The extra words are counted, not shown, in case one of them is a secret typed by mistake.
 */
function checkPositionals(command: Command, positionals: readonly string[]): void {
  const count = positionals.length;
  const countPhrase = count === 1 ? "1 was given" : `${count} were given`;
  if (command === "explain") {
    if (count === 0) throw new UsageError("explain needs a request target, for example /api/v4/users/me");
    if (count > 1) {
      throw new UsageError(`explain takes one request target, but ${countPhrase}; quote a target that contains spaces`);
    }
    return;
  }
  if (count > 0) {
    throw new UsageError(`${command} takes no arguments besides options, but ${countPhrase}; run preauth-gate --help`);
  }
}

export function helpText(version: string): string {
  const lines = [
    `preauth-gate ${version}: checks Mattermost's pre-authentication secret in front of the server.`,
    "",
    "Usage:",
    "  preauth-gate [serve] [OPTIONS]            run the gate",
    "  preauth-gate check [OPTIONS]              validate the configuration and print the rules",
    "  preauth-gate explain TARGET [--with-secret] [OPTIONS]",
    "                                            show what the gate does with a request target;",
    "                                            --with-secret: as if it carried the first secret",
    "  preauth-gate secret                       print a new random secret (32 bytes, base64)",
    "  preauth-gate version | --version          print the version",
    "  preauth-gate help | --help                print this text",
    "",
    "Options (flag, environment variable, config key, default):",
  ];
  for (const spec of OPTIONS) {
    lines.push(`  --${spec.flag} ${spec.valueName}${spec.repeatable ? " (repeatable)" : ""}`);
    lines.push(`      ${spec.help}`);
    const where = [spec.env ? `env ${spec.env}` : null, spec.fileKey ? `key ${spec.fileKey}` : null];
    if (spec.defaultValue !== null) where.push(`default ${spec.defaultValue}`);
    lines.push(`      ${where.filter((item) => item !== null).join("; ")}`);
  }
  lines.push(
    "",
    "The secret is never read from the command line. Exit status 2 means an invalid configuration.",
  );
  return lines.join("\n");
}
