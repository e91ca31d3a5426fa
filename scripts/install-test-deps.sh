#!/usr/bin/env bash
# Installs, if missing, the servers and tools the test suite runs against:
#   etcd         (Debian etcd-server and etcd-client)
#   dnsmasq      (Debian dnsmasq-base: the DNS server discovery is tested against)
#   azurite      (npm, pinned; installed under .cache/azurite, run with the machine's Node)
#   erlang       (Debian erlang-base: the remoting benchmark compares with Erlang distribution)
#   promtool     (Debian prometheus: the tests check the /metrics exposition with it)
#   chromium     (Debian chromium: the dashboard is tested end to end in headless Chromium)
#   ip, tc       (Debian iproute2: the chaos harness's partitions in network namespaces)
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION=3.35.0

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || apt_packages+=(etcd-client)
command -v erl >/dev/null 2>&1 || apt_packages+=(erlang-base)
[ -x /usr/sbin/dnsmasq ] || apt_packages+=(dnsmasq-base)
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
{ [ -x /usr/sbin/ip ] && [ -x /usr/sbin/tc ]; } || apt_packages+=(iproute2)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "installing ${apt_packages[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${apt_packages[@]}"
fi

if [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]; then
  command -v npm >/dev/null 2>&1 || {
    echo "npm is needed to install Azurite" >&2
    exit 1
  }
  echo "installing azurite@${AZURITE_VERSION}"
  mkdir -p .cache/azurite
  npm install --prefix .cache/azurite --no-audit --no-fund --loglevel=error \
    "azurite@${AZURITE_VERSION}" >/dev/null
fi

echo "etcd: $(etcd --version | head -n1)"
echo "dnsmasq: $(/usr/sbin/dnsmasq --version | head -n1)"
echo "azurite: $(.cache/azurite/node_modules/.bin/azurite-blob --version)"
echo "promtool: $(promtool --version 2>&1 | head -n1)"
echo "chromium: $(chromium --version 2>/dev/null | head -n1)"
echo "iproute2: $(/usr/sbin/ip -V)"
echo "erlang/otp: $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')"
