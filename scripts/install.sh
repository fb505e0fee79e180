#!/usr/bin/env bash
# Installs preauth-gate as a systemd service on the Mattermost host. Run it as
# root. Running it again is safe, because it keeps an existing secret and
# configuration and replaces only the binary and the unit file.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh [--binary PATH] [--root DIR]

Installs preauth-gate as a systemd service:
  /usr/local/bin/preauth-gate                  the executable (mode 0755)
  /etc/systemd/system/preauth-gate.service     the unit (mode 0644)
  /etc/preauth-gate/                           configuration directory (mode 0750)
  /etc/preauth-gate/secret                     a new random secret, only if missing (mode 0600)
  /etc/preauth-gate/preauth-gate.env           example settings, only if missing (mode 0640)

Options:
  --binary PATH  executable to install (default: dist/preauth-gate of this checkout)
  --root DIR     install below DIR instead of /, for packaging or tests; systemctl
                 is not called. The DESTDIR environment variable does the same.
  -h, --help     print this help
EOF
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
binary="$script_dir/../dist/preauth-gate"
unit_source="$script_dir/preauth-gate.service"
root="${DESTDIR:-}"

say() { printf 'install.sh: %s\n' "$*"; }
fail() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --binary)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      binary=$2
      shift 2
      ;;
    --binary=*)
      binary=${1#--binary=}
      shift
      ;;
    --root)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      root=$2
      shift 2
      ;;
    --root=*)
      root=${1#--root=}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      printf 'install.sh: unknown argument "%s"\n' "$1" >&2
      usage >&2
      exit 2
      ;;
  esac
done

# "/" and "" both mean the real system. A trailing slash would double up in paths.
root=${root%/}
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  fail "must run as root to install into the system. Run it with sudo, or pass --root DIR to install below DIR."
fi
[ -f "$binary" ] || fail "binary $binary not found. Build it with 'npm run build', or pass --binary PATH."
[ -x "$binary" ] || fail "binary $binary is not executable. Run: chmod 755 $binary"
[ -f "$unit_source" ] || fail "unit file $unit_source not found next to this script"
version=$("$binary" version) || fail "'$binary version' failed. Pass --binary with a preauth-gate executable built for this machine."

bin_path="$root/usr/local/bin/preauth-gate"
unit_path="$root/etc/systemd/system/preauth-gate.service"
config_dir="$root/etc/preauth-gate"
secret_path="$config_dir/secret"
env_path="$config_dir/preauth-gate.env"

# Files are written to a temporary name in the target directory and renamed, so
# a crash leaves either the old or the new file, never half of one.
temporary=""
trap 'if [ -n "$temporary" ]; then rm -f -- "$temporary"; fi' EXIT

# Copies $1 to $2 with mode $3 unless $2 already has the same content and mode.
# Sets `changed` to yes or no.
install_file() {
  local source=$1 target=$2 mode=$3
  if [ -f "$target" ] && cmp -s -- "$source" "$target" && [ "$(stat -c %a -- "$target")" = "${mode#0}" ]; then
    changed=no
    return
  fi
  mkdir -p -- "$(dirname -- "$target")"
  temporary="$target.install-tmp.$$"
  install -m "$mode" -- "$source" "$temporary"
  mv -f -- "$temporary" "$target"
  temporary=""
  changed=yes
}

install_file "$binary" "$bin_path" 0755
binary_changed=$changed
if [ "$binary_changed" = yes ]; then
  say "installed $bin_path ($version)"
else
  say "$bin_path is already this version ($version)"
fi

install_file "$unit_source" "$unit_path" 0644
unit_changed=$changed
if [ "$unit_changed" = yes ]; then
  say "installed $unit_path"
else
  say "$unit_path is unchanged"
fi

# Only root can read the directory. The service does not need to, because
# systemd reads the environment file and copies the secret as root.
install -d -m 0750 -- "$config_dir"

if [ -e "$secret_path" ]; then
  say "kept the existing secret $secret_path"
  secret_mode=$(stat -c %a -- "$secret_path")
  case "$secret_mode" in
    400 | 600) ;;
    *) say "warning: $secret_path has mode $secret_mode, so other users may read it. Run: chmod 600 $secret_path" ;;
  esac
else
  temporary="$secret_path.install-tmp.$$"
  # umask 077 makes the file private from the moment it exists. The secret goes
  # from the binary's standard output straight into the file.
  (umask 077 && "$binary" secret >"$temporary")
  [ -s "$temporary" ] || fail "'$binary secret' wrote no secret"
  chmod 0600 -- "$temporary"
  mv -f -- "$temporary" "$secret_path"
  temporary=""
  say "wrote a new random secret to $secret_path (mode 0600)"
fi

if [ -e "$env_path" ]; then
  say "kept the existing settings $env_path"
else
  temporary="$env_path.install-tmp.$$"
  (umask 027 && cat >"$temporary") <<'EOF'
# Settings for preauth-gate.service, read by systemd as root. One VARIABLE=value
# per line. `preauth-gate --help` lists every setting. Restart the service after
# a change: systemctl restart preauth-gate
# Do not put the secret here: the unit passes /etc/preauth-gate/secret as the
# systemd credential preauth-secret.

# Address for client connections. Clients or a TLS terminator connect here.
PREAUTH_GATE_LISTEN=127.0.0.1:8066
# Mattermost's origin: http:// or https:// and the address of its ListenAddress setting.
PREAUTH_GATE_UPSTREAM=http://127.0.0.1:8065
# Single sign-on routes to let through without the secret: saml, openid, oauth.
#PREAUTH_GATE_ALLOW=saml
# A proxy in front of the gate whose X-Forwarded-For is kept.
#PREAUTH_GATE_TRUSTED_PROXIES=127.0.0.1
#PREAUTH_GATE_LOG_LEVEL=info
# Seconds that requests in flight get to finish on stop. The unit's TimeoutStopSec
# (35 s) must stay above it, so raise that in a drop-in for a grace over 30 s.
#PREAUTH_GATE_SHUTDOWN_GRACE=25
EOF
  chmod 0640 -- "$temporary"
  mv -f -- "$temporary" "$env_path"
  temporary=""
  say "wrote example settings to $env_path"
fi

if [ -n "$root" ]; then
  say "installed below $root; systemctl was not called"
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  say "systemd is not running on this machine, so systemctl was not called"
  say "on a machine with systemd, run: systemctl daemon-reload && systemctl enable --now preauth-gate"
  exit 0
fi

systemctl daemon-reload
say "ran systemctl daemon-reload"
if systemctl --quiet is-active preauth-gate.service; then
  if [ "$binary_changed" = yes ] || [ "$unit_changed" = yes ]; then
    say "the gate is running the old version; to switch, run: systemctl restart preauth-gate"
  else
    say "the gate is running; nothing else to do"
  fi
else
  cat <<EOF
install.sh: next steps:
  1. Check the settings in $env_path (listen address and Mattermost's address).
  2. Start the gate now and at every boot:  systemctl enable --now preauth-gate
  3. Check that it started:                 systemctl status preauth-gate
  4. Give users the secret from $secret_path (for example: cat $secret_path).
EOF
fi
