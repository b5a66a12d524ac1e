#!/usr/bin/env bash
# Installs Dovecot's POP3 server for the real-server tests (tests/it/dovecot.rs).
# Idempotent: does nothing when `dovecot` is already installed. The tests
# start their own private instances (own config, own port, no systemd), so a
# system instance the package may have started is stopped to save resources.
set -euo pipefail

have_dovecot() {
    command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]
}

if ! have_dovecot; then
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    else
        SUDO=
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-core dovecot-pop3d
fi

if ! have_dovecot; then
    echo "install-dovecot: dovecot is still missing after installation" >&2
    exit 1
fi

dovecot_bin="$(command -v dovecot || echo /usr/sbin/dovecot)"

# The package may have started the system instance (port 110/143) through its
# init script; ours never use it. Stop it if it runs. Failure here is harmless.
if [ -r /run/dovecot/master.pid ]; then
    pid="$(cat /run/dovecot/master.pid 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        "$dovecot_bin" stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    fi
fi

# The tests need the system users the package creates.
for user in dovecot dovenull; do
    if ! id "$user" >/dev/null 2>&1; then
        echo "install-dovecot: system user $user is missing" >&2
        exit 1
    fi
done

echo "install-dovecot: $("$dovecot_bin" --version) at $dovecot_bin"
