#!/bin/sh
# Install everything tandem needs to build, test and benchmark on Debian 12.
# Idempotent: installs only what is missing, so `make run` / `make test` can
# call it every time at no cost once the machine is set up.
set -eu

PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev llvm \
liburing-dev libiscsi-dev libiscsi-bin liblz4-dev libjansson-dev \
libcmocka-dev libmicrohttpd-dev libcurl4-openssl-dev libxxhash-dev \
libisal-dev nettle-dev qemu-utils qemu-block-extra tgt curl iproute2 procps \
python3"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "deps.sh: need root (or sudo) to install:$missing" >&2
		exit 1
	fi
fi

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
