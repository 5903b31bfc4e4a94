#!/usr/bin/env bash
# Makes `cargo build --release -p openexpert --features cuda` build with no download outside the
# package registries (docs/gpu.md, "Building the CUDA backend offline").
#
# burn 0.22's CUDA backend (cubecl-cuda 0.11) always links LLVM through cubecl-llvm, whose build
# dependency tracel-llvm-bundler downloads an LLVM 23 bundle from GitHub releases into
# `${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-<version>/` unless a sentinel file says
# it is already there. This script instead:
#   1. installs Debian's LLVM 22 (static libraries, headers, llvm-config) and what its link line
#      names (Polly, zlib, zstd; libxml2 and z3 come with llvm-22-dev) with apt;
#   2. creates the bundle folder with a `bin/llvm-config` that runs Debian's and rewrites absolute
#      `/…/libNAME.so` paths to `-lNAME` (the bundler would turn `/…/libz3.so` into `-llibz3`);
#   3. writes the sentinel, so the bundler's build script returns without any network access.
# It never touches a folder that holds a real (downloaded) bundle. Idempotent; needs root for apt.
#
# The build also wants CUDARC_CUDA_VERSION (cudarc's bindings): without nvcc, cudarc falls back to
# its newest CUDA version; this project's GPU machines run driver 580 (CUDA 13.0), hence 13000.
set -euo pipefail
cd "$(dirname "$0")/.."

LLVM_MAJOR="${OPENEXPERT_LLVM_MAJOR:-22}"
LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}"
say() { echo "install-cuda-deps: $*"; }
die() { echo "install-cuda-deps: error: $*" >&2; exit 1; }

# --- 1. Debian packages -------------------------------------------------------------------
pkgs=("llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" zlib1g-dev libzstd-dev libxml2-dev libz3-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} (LLVM ${LLVM_MAJOR} with static libraries) by hand"
  say "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; then
    die "apt-get could not install ${missing[*]}; LLVM ${LLVM_MAJOR} comes from Debian bookworm-security (is it in /etc/apt/sources.list*?)"
  fi
else
  say "Debian packages present: ${pkgs[*]}"
fi

real_config="${LLVM_PREFIX}/bin/llvm-config"
[ -x "$real_config" ] || die "$real_config is missing although llvm-${LLVM_MAJOR}-dev is installed"
"$real_config" --targets-built | tr ' ' '\n' | grep -qx NVPTX \
  || die "Debian's LLVM ${LLVM_MAJOR} was built without the NVPTX target"
[ -f "$("$real_config" --libdir)/libLLVMNVPTXCodeGen.a" ] \
  || die "no static libLLVMNVPTXCodeGen.a under $("$real_config" --libdir)"

# --- 2. the bundle folder the bundler looks in -------------------------------------------
# The bundler's version, from Cargo.lock (`tracel-llvm-bundler`), names the folder.
bundler_version=$(awk '/^name = "tracel-llvm-bundler"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$bundler_version" ] || die "Cargo.lock has no tracel-llvm-bundler; is this the openexpert workspace?"
data_dir="${XDG_DATA_HOME:-$HOME/.local/share}"
bundle="${data_dir}/tracel/tracel-llvm-${bundler_version}"
sentinel="${bundle}/.tracel-llvm-installed"
marker="${bundle}/.openexpert-debian-llvm"

if [ -f "$sentinel" ] && [ ! -f "$marker" ]; then
  say "a real tracel-llvm bundle is installed at $bundle; leaving it as it is"
else
  mkdir -p "${bundle}/bin"
  wrapper="${bundle}/bin/llvm-config"
  tmp="${wrapper}.tmp.$$"
  cat >"$tmp" <<EOF
#!/bin/sh
# Written by openexpert's scripts/install-cuda-deps.sh: Debian's LLVM ${LLVM_MAJOR} standing in for the
# tracel-llvm ${bundler_version} bundle. Absolute shared-library paths (/…/libz3.so) become -lNAME,
# which is what tracel-llvm-bundler's link step can pass on to rustc.
set -e
out=\$("${real_config}" "\$@")
printf '%s\n' "\$out" | sed -E 's#(^| )/[^ ]*/lib([A-Za-z0-9_+.-]+)\\.so(\\.[0-9.]+)?( |\$)#\\1-l\\2\\4#g'
EOF
  chmod +x "$tmp"
  mv -f "$tmp" "$wrapper"
  echo "debian llvm-${LLVM_MAJOR} via ${real_config}" >"$marker"
  : >"$sentinel"
  say "bundle folder ready: $bundle (llvm-config -> ${real_config})"
fi

# --- 3. checks ----------------------------------------------------------------------------
cfg="${bundle}/bin/llvm-config"
sys_libs=$("$cfg" --link-static --system-libs)
case " $sys_libs " in
  *" /"*) die "$cfg --system-libs still prints an absolute path: $sys_libs" ;;
esac
n_libs=$("$cfg" --link-static --libs | wc -w)
[ "$n_libs" -gt 0 ] || die "$cfg --link-static --libs printed nothing"
say "llvm-config $("$cfg" --version): ${n_libs} static libraries, system libraries: ${sys_libs}"
say "ready. Build with: CUDARC_CUDA_VERSION=\${CUDARC_CUDA_VERSION:-13000} cargo build --release -p openexpert --features cuda"
