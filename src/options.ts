// The settings an administrator can give, in one table: command-line flag, environment
// variable, config-file key, default and help text. `--help` and the README are built
// from the same facts.

export interface OptionSpec {
  /** Long flag without the leading dashes. */
  readonly flag: string;
  readonly env: string | null;
  /** Key in the TOML config file; null when the option is command-line only. */
  readonly fileKey: string | null;
  readonly valueName: string;
  readonly defaultValue: string | null;
  /** The flag may be repeated, and the environment variable takes a comma-separated list. */
  readonly repeatable: boolean;
  readonly help: string;
}

export const OPTIONS: readonly OptionSpec[] = [
  {
    flag: "config",
    env: "PREAUTH_GATE_CONFIG",
    fileKey: null,
    valueName: "FILE",
    defaultValue: null,
    repeatable: false,
    help:
      "TOML file with any of the keys below and [[secrets]] tables (label, file, optional expires date-time). " +
      "Flags and environment variables override its keys, but secrets from every source add up. " +
      "Relative paths in it are resolved against its directory.",
  },
  {
    flag: "listen",
    env: "PREAUTH_GATE_LISTEN",
    fileKey: "listen",
    valueName: "HOST:PORT",
    defaultValue: "127.0.0.1:8066",
    repeatable: false,
    help: "Address the gate accepts client connections on. Use [::1]:PORT for IPv6.",
  },
  {
    flag: "upstream",
    env: "PREAUTH_GATE_UPSTREAM",
    fileKey: "upstream",
    valueName: "URL",
    defaultValue: "http://127.0.0.1:8065",
    repeatable: false,
    help: "Origin of the Mattermost server (http or https, no path). Every request goes there.",
  },
  {
    flag: "secret-file",
    env: "PREAUTH_GATE_SECRET_FILE",
    fileKey: "secret_files",
    valueName: "[LABEL=]PATH",
    defaultValue: null,
    repeatable: true,
    help:
      "File holding one secret (a trailing newline is ignored). The label, which is not " +
      "secret, defaults to the file name. Secrets from every source add up: these files, " +
      "the config file's secret_files and [[secrets]], PREAUTH_GATE_SECRET and systemd " +
      "credentials named preauth-secret* in $CREDENTIALS_DIRECTORY.",
  },
  {
    flag: "allow",
    env: "PREAUTH_GATE_ALLOW",
    fileKey: "allow",
    valueName: "GROUP",
    defaultValue: null,
    repeatable: true,
    help:
      "Extra whitelist groups: saml, openid, oauth (single sign-on routes) and websocket " +
      "(WebSocket upgrades to /api/v4/websocket without the secret; weakens the gate).",
  },
  {
    flag: "sso-services",
    env: "PREAUTH_GATE_SSO_SERVICES",
    fileKey: "sso_services",
    valueName: "NAMES",
    defaultValue: null,
    repeatable: true,
    help: "Comma-separated service names allowed in SSO routes, for example gitlab,google. Default: any [A-Za-z0-9]+.",
  },
  {
    flag: "trusted-proxy",
    env: "PREAUTH_GATE_TRUSTED_PROXIES",
    fileKey: "trusted_proxies",
    valueName: "CIDR",
    defaultValue: null,
    repeatable: true,
    help:
      "Address or CIDR range of a proxy in front of the gate whose forwarding headers (X-Forwarded-For, " +
      "X-Real-IP, X-Forwarded-Proto, Forwarded, X-Forwarded-Host and the like) are kept. " +
      "Default: none, so the gate sets the first three and drops the others.",
  },
  {
    flag: "max-body-size",
    env: "PREAUTH_GATE_MAX_BODY_SIZE",
    fileKey: "max_body_size",
    valueName: "SIZE",
    defaultValue: "1GiB",
    repeatable: false,
    help: "Largest request body forwarded, in bytes or with a unit (KB, MB, GB, KiB, MiB, GiB). Larger bodies get 413.",
  },
  {
    flag: "upstream-timeout",
    env: "PREAUTH_GATE_UPSTREAM_TIMEOUT",
    fileKey: "upstream_timeout",
    valueName: "SECONDS",
    defaultValue: "600",
    repeatable: false,
    help:
      "Time allowed for Mattermost to start its response once the request body is complete, and the longest " +
      "pause within it; then the client gets 504. Whole seconds, 1 to 86400.",
  },
  {
    flag: "client-timeout",
    env: "PREAUTH_GATE_CLIENT_TIMEOUT",
    fileKey: "client_timeout",
    valueName: "SECONDS",
    defaultValue: "60",
    repeatable: false,
    help:
      "Time a client has to send a request head, and the longest pause within a request body; then it gets 408. " +
      "Whole seconds, 1 to 3600.",
  },
  {
    flag: "idle-timeout",
    env: "PREAUTH_GATE_IDLE_TIMEOUT",
    fileKey: "idle_timeout",
    valueName: "SECONDS",
    defaultValue: "120",
    repeatable: false,
    help: "Time an idle client connection or WebSocket stays open. Whole seconds, 10 to 255.",
  },
  {
    flag: "shutdown-grace",
    env: "PREAUTH_GATE_SHUTDOWN_GRACE",
    fileKey: "shutdown_grace",
    valueName: "SECONDS",
    defaultValue: "25",
    repeatable: false,
    help: "On SIGTERM or SIGINT, time requests in flight get to finish before the gate exits. Whole seconds, 0 to 3600.",
  },
  {
    flag: "admin-listen",
    env: "PREAUTH_GATE_ADMIN_LISTEN",
    fileKey: "admin_listen",
    valueName: "HOST:PORT",
    defaultValue: null,
    repeatable: false,
    help: "Address for /healthz, /readyz and /metrics (Prometheus). Off by default; keep it off the public network.",
  },
  {
    flag: "tls-cert",
    env: "PREAUTH_GATE_TLS_CERT",
    fileKey: "tls_cert",
    valueName: "FILE",
    defaultValue: null,
    repeatable: false,
    help: "PEM certificate chain; with --tls-key the gate serves HTTPS itself. Re-read on SIGHUP.",
  },
  {
    flag: "tls-key",
    env: "PREAUTH_GATE_TLS_KEY",
    fileKey: "tls_key",
    valueName: "FILE",
    defaultValue: null,
    repeatable: false,
    help: "PEM private key for --tls-cert. Re-read on SIGHUP.",
  },
  {
    flag: "log-level",
    env: "PREAUTH_GATE_LOG_LEVEL",
    fileKey: "log_level",
    valueName: "LEVEL",
    defaultValue: "info",
    repeatable: false,
    help: "One of debug, info, warn, error.",
  },
];

export function optionSpec(flag: string): OptionSpec {
  const spec = OPTIONS.find((option) => option.flag === flag);
  if (spec === undefined) throw new Error(`unknown option ${flag}`);
  return spec;
}
