#!/bin/sh
# Install the Debian packages that the tests and benchmarks need, when running as root and
# something is missing. Elsewhere say what is missing; the tests that need it skip (or fail
# under CI).
set -eu
PACKAGES="openssh-server openssh-client rsync rclone"
missing=""
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"
command -v rsync >/dev/null 2>&1 || missing="$missing rsync"
command -v rclone >/dev/null 2>&1 || missing="$missing rclone"
command -v gpg >/dev/null 2>&1 || { missing="$missing gnupg"; PACKAGES="$PACKAGES gnupg"; }  # delivery: OpenPGP packages
command -v lsyncd >/dev/null 2>&1 || { missing="$missing lsyncd"; PACKAGES="$PACKAGES lsyncd"; }  # sync benchmarks: lsyncd as the peer
command -v soffice >/dev/null 2>&1 || { missing="$missing libreoffice-writer"; PACKAGES="$PACKAGES libreoffice-writer"; }  # booklet: ODT -> PDF
command -v pdftotext >/dev/null 2>&1 || { missing="$missing poppler-utils"; PACKAGES="$PACKAGES poppler-utils"; }  # booklet: PDF text
command -v chromium >/dev/null 2>&1 || { missing="$missing chromium"; PACKAGES="$PACKAGES chromium"; }  # UI test: headless browser
command -v chromedriver >/dev/null 2>&1 || { missing="$missing chromium-driver"; PACKAGES="$PACKAGES chromium-driver"; }  # UI test: Selenium's driver
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing (run as root to install them)" >&2
    exit 0
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
