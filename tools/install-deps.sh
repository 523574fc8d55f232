#!/usr/bin/env bash
# Installs the Debian 12 packages pactor needs, and only those that are missing.
# Called by `make deps` (and so by `make run`, `make test`, `make bench`).
set -euo pipefail

packages=(
  cmake make g++ python3
  libmsgpack-cxx-dev   # msgpack-c C++ API (header-only)
  libboost-test-dev    # Boost.Test
  libfmt-dev           # formatting
  libcli11-dev         # command-line parsing for tools, examples, bench
  libcaf-dev           # CAF 0.17: only the future net/ gateway links it
)
# Extra packages for optional targets: `make fuzz` needs clang with libFuzzer.
if [[ "${PACTOR_WITH_CLANG:-0}" == 1 ]]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "pactor: installing missing packages: ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "pactor: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
