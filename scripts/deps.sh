#!/bin/sh
# deps.sh — install the Debian packages tend needs to build and test, if any are missing.
#
# Quiet when everything is there. As root, installs what is missing (apt-get update first,
# only then). Otherwise prints the apt-get line to run and exits 1. Never prompts, never
# reads stdin.
set -eu

BUILD_PACKAGES="build-essential pkg-config zlib1g-dev libjansson-dev libsodium-dev libinih-dev"
# systemd: systemd-notify, a real sd_notify sender for the tests of tend supervise.
# iproute2, openssh-server, openssh-client: the tests of tend launch make hosts out of network
# namespaces (ip netns, veth, bridge) and run an sshd in each, so the default ssh agent is used
# for real (tests/launch_hosts.py).
TEST_PACKAGES="libcmocka-dev python3 python3-pytest python3-pytest-xdist systemd iproute2
               openssh-server openssh-client"
PACKAGES="$BUILD_PACKAGES $TEST_PACKAGES"

if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "deps.sh: dpkg-query not found: this script knows only Debian and its derivatives;" \
             "install the equivalents of: $PACKAGES" >&2
        exit 1
fi

missing=
for pkg in $PACKAGES; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        case "$status" in
        *" ok installed") ;;
        *) missing="$missing $pkg" ;;
        esac
done
missing=${missing# }
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing packages; as root, run:" >&2
        echo "apt-get install -y $missing" >&2
        exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing $missing" >&2
apt-get update -q </dev/null
# shellcheck disable=SC2086 # word splitting of the list is intended
apt-get install -y -q $missing </dev/null
