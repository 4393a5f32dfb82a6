#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Usage: scripts/test.sh [pytest args]     (as root, or with sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts the integration tests start: an authoritative DNS server (NSD),
# named-checkzone (bind9-utils), and mail clients as later issues need them.
apt_packages=(bind9-utils nsd postfix swaks fetchmail getmail6 isync offlineimap3 openssh-server
              dovecot-pop3d dovecot-imapd   # dovecot: the benches' reference
              systemd)                      # systemd-analyze checks the unit; nothing boots
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    # Postfix is a reference and a load client (smtp-source) for the tests, never
    # the machine's MTA: install it unconfigured so no system instance is set up.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check .
python3 -m pytest "$@"
