#!/usr/bin/env bun
// Entry point of the preauth-gate executable.
import packageJson from "../package.json" with { type: "json" };
import { helpText, parseCommandLine, UsageError, type ParsedCommandLine } from "./cli.ts";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { createGate, WEBSOCKET_PATHS } from "./gate.ts";
import type { AdminServer } from "./admin.ts";
import { createLogger, type Logger } from "./log.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { startGate, type RunningGate } from "./server.ts";
import { isForwardable, parseRequestTarget } from "./target.ts";

const VERSION: string = packageJson.version;

/** Exit status for an invalid command line or configuration. */
const EXIT_USAGE = 2;

function loadOrExit(commandLine: ParsedCommandLine): Config {
  try {
    return loadConfig({ flags: commandLine.flags, env: process.env });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`preauth-gate: ${error.message}`);
      process.exit(EXIT_USAGE);
    }
    throw error;
  }
}

/** Describes why a listener could not start, in one line. */
function listenFailure(error: unknown): string {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message ?? String(error);
  if (code === "EADDRINUSE") return `the address is already in use (${message})`;
  return code === undefined ? message : `${code}: ${message}`;
}

async function serve(commandLine: ParsedCommandLine): Promise<void> {
  const config = loadOrExit(commandLine);
  const logger = createLogger(config.logLevel);
  const metrics = createMetrics();
  metrics.addSecretLabels(config.secrets.map((secret) => secret.label));
  // The admin listener's modules (hono, and prom-client at the first scrape) are loaded
  // only when it is configured, so a gate without it keeps a smaller footprint.
  const adminModule = config.adminListen === null ? null : await import("./admin.ts");

  let current = config;
  let admin: AdminServer | null = null;
  let starting: Promise<RunningGate>;
  try {
    admin =
      config.adminListen === null || adminModule === null
        ? null
        : adminModule.startAdminServer({
            hostname: config.adminListen.hostname,
            port: config.adminListen.port,
            metrics,
            upstreamOrigin: () => current.upstreamOrigin,
            logger,
          });
    starting = startGate(config, logger, metrics);
  } catch (error) {
    failToStart(error, logger);
  }

  // The signal handlers go in before the listener is up, so that a signal that arrives
  // during start-up is handled too. Each handler waits for the start to finish.
  installSignalHandlers(commandLine, logger, metrics, starting, admin, () => current, (next) => (current = next));

  try {
    await starting;
  } catch (error) {
    failToStart(error, logger);
  }
}

/** Logs why the gate could not start and exits with status 1. */
function failToStart(error: unknown, logger: Logger): never {
  // Binding failures: address in use, an unknown host name, a key that does not match
  // the certificate. The messages name the cause but never a secret.
  const reason = listenFailure(error);
  logger.error({ error: reason }, "gate failed to start");
  console.error(`preauth-gate: cannot start: ${reason}`);
  process.exit(1);
}

/** Installs the SIGHUP reload and the SIGTERM and SIGINT shutdown. */
function installSignalHandlers(
  commandLine: ParsedCommandLine,
  logger: Logger,
  metrics: Metrics,
  starting: Promise<RunningGate>,
  admin: AdminServer | null,
  currentConfig: () => Config,
  setCurrentConfig: (config: Config) => void,
): void {
  process.on("SIGHUP", async () => {
    let next: Config;
    try {
      next = loadConfig({ flags: commandLine.flags, env: process.env });
    } catch (error) {
      const problems = error instanceof ConfigError ? error.problems : [(error as Error).message];
      logger.error({ problems }, "reload rejected, the running configuration stays");
      return;
    }
    try {
      const running = await starting;
      await running.reload(next);
    } catch (error) {
      logger.error({ problems: [(error as Error).message] }, "reload rejected, the running configuration stays");
      return;
    }
    const adminBefore = JSON.stringify(currentConfig().adminListen);
    if (JSON.stringify(next.adminListen) !== adminBefore) {
      logger.warn({ admin_listen: adminBefore }, "admin listener changes take effect after a restart");
    }
    setCurrentConfig(next);
    metrics.addSecretLabels(next.secrets.map((secret) => secret.label));
    if (next.logLevel !== logger.level) logger.level = next.logLevel;
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      // A second signal means the operator does not want to wait for the grace period.
      logger.warn({ signal }, "second signal, stopping without waiting");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, grace_seconds: currentConfig().shutdownGraceMs / 1000 }, "gate stopping");
    const stopped = starting.then((running) => Promise.all([running.shutdown(), admin?.stop()]));
    stopped.then(() => {
      logger.info({}, "gate stopped");
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

function check(config: Config): void {
  const gate = createGate(config);
  console.log(`configuration is valid`);
  console.log(`listen:   ${config.listen.hostname}:${config.listen.port}`);
  console.log(`upstream: ${config.upstreamOrigin}`);
  const secrets = config.secrets.map((secret) =>
    secret.expiresAt === null ? secret.label : `${secret.label} (expires ${secret.expiresAt.toISOString()})`,
  );
  console.log(`secrets:  ${secrets.join(", ")}`);
  const now = Date.now();
  for (const secret of config.secrets) {
    if (secret.expiresAt === null || secret.expiresAt.getTime() > now) continue;
    const expiry = secret.expiresAt.toISOString();
    console.error(`preauth-gate: warning: secret "${secret.label}" expired at ${expiry} and is no longer accepted`);
  }
  console.log("whitelist (without the secret):");
  for (const rule of gate.whitelist.rules) console.log(`  ${rule.nginx.padEnd(72)} ${rule.name}`);
  if (config.websocketExempt) console.log("  WebSocket upgrades to /api/v4/websocket and /api/v4/websocket/");
  console.log("everything else needs the X-Mattermost-Preauth-Secret header");
}

function explain(config: Config, commandLine: ParsedCommandLine): void {
  const requestTarget = commandLine.positionals[0];
  if (requestTarget === undefined) throw new UsageError("explain needs a request target, for example /api/v4/users/me");
  const gate = createGate(config);
  const parsed = parseRequestTarget(requestTarget);
  if (!parsed.ok) {
    console.log(`target ${JSON.stringify(requestTarget)}: ${parsed.problem}; the gate responds with 400`);
    return;
  }
  const presented = commandLine.withSecret ? (config.secrets[0]?.value ?? null) : null;
  const decision = gate.decide(parsed.target.path, presented, false);
  console.log(`target:  ${requestTarget}`);
  console.log(`path:    ${parsed.target.path} (what the gate matches and forwards)`);
  if (decision.outcome === "whitelisted") {
    const rule = gate.whitelist.rules.find((candidate) => candidate.name === decision.rule);
    console.log(`outcome: forwarded without the secret, by rule ${decision.rule} (${rule?.nginx ?? ""})`);
  } else if (decision.outcome === "allowed" && !isForwardable(parsed.target)) {
    console.log(`outcome: 400, because the path is not in canonical form, so Mattermost could route it elsewhere`);
  } else if (decision.outcome === "allowed") {
    console.log(`outcome: forwarded, secret "${decision.label}" accepted`);
  } else {
    console.log(`outcome: rejected with 403 x-reject-reason: pre-auth (secret ${decision.reason})`);
  }
  // A WebSocket upgrade skips the whitelist, and --allow websocket exempts it on these
  // paths only, so its outcome can differ from a plain request's.
  if (!WEBSOCKET_PATHS.has(parsed.target.path)) return;
  const upgrade = gate.decide(parsed.target.path, presented, true);
  if (upgrade.outcome === "whitelisted") {
    console.log("websocket upgrade: forwarded without the secret (--allow websocket)");
  } else if (upgrade.outcome === "allowed") {
    console.log(`websocket upgrade: forwarded, secret "${upgrade.label}" accepted`);
  } else {
    console.log(`websocket upgrade: needs the secret, so it is rejected with 403 (secret ${upgrade.reason})`);
  }
}

function main(argv: readonly string[]): void {
  let commandLine: ParsedCommandLine;
  try {
    commandLine = parseCommandLine(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`preauth-gate: ${error.message}`);
    process.exit(EXIT_USAGE);
  }
  switch (commandLine.command) {
    case "help":
      console.log(helpText(VERSION));
      return;
    case "version":
      console.log(`preauth-gate ${VERSION} (Bun ${Bun.version})`);
      return;
    case "secret":
      console.log(Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"));
      return;
    case "check":
      check(loadOrExit(commandLine));
      return;
    case "explain":
      try {
        explain(loadOrExit(commandLine), commandLine);
      } catch (error) {
        if (!(error instanceof UsageError)) throw error;
        console.error(`preauth-gate: ${error.message}`);
        process.exit(EXIT_USAGE);
      }
      return;
    case "serve":
      void serve(commandLine);
      return;
  }
}

main(process.argv.slice(2));
