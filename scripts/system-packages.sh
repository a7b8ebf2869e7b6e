#!/usr/bin/env bash
# Ensure the system programs that `make test`, `make demo` and `make ui` run are present:
#   prometheus  - the Prometheus server (Debian/Ubuntu package `prometheus`)
#   chromium    - headless Chromium and its driver, for the UI's browser test
# Missing ones are installed with apt-get when running as root on Debian/Ubuntu; otherwise this
# stops at once and prints the exact command to run.
set -euo pipefail

usage() { echo "usage: $0 prometheus|chromium ..." >&2; exit 2; }
[ $# -gt 0 ] || usage

distro=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  distro="$(. /etc/os-release; echo "${ID:-} ${ID_LIKE:-}")"
fi
case " $distro " in
  *" ubuntu "*) chromium_pkgs=(chromium-browser chromium-chromedriver) ;;
  *) chromium_pkgs=(chromium chromium-driver) ;;
esac

have() { command -v "$1" >/dev/null 2>&1; }

packages=()
for want in "$@"; do
  case "$want" in
    prometheus) have prometheus || packages+=(prometheus) ;;
    chromium)
      { have chromium || have chromium-browser; } && have chromedriver || packages+=("${chromium_pkgs[@]}") ;;
    *) usage ;;
  esac
done
[ ${#packages[@]} -eq 0 ] && exit 0

command="apt-get install -y ${packages[*]}"
case " $distro " in
  *" debian "*|*" ubuntu "*) debian_like=yes ;;
  *) debian_like=no ;;
esac
if [ "$(id -u)" -eq 0 ] && [ "$debian_like" = yes ] && have apt-get; then
  echo "installing system packages: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${packages[@]}"
  exit 0
fi
if [ "$debian_like" = yes ]; then
  echo "missing system packages: ${packages[*]}; install them with: sudo $command" >&2
else
  echo "missing system programs for: $*; install Prometheus and Chromium with chromedriver" \
       "with your system's package manager (on Debian/Ubuntu: $command)" >&2
fi
exit 1
