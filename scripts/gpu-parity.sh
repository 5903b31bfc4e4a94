#!/usr/bin/env bash
# The GPU parity suite and GPU figures of openexpert, for a lent GPU machine that has no network
# and no Rust toolchain (docs/gpu.md, "Parity suite and figures on a lent GPU").
#
#   here (build machine):   bash scripts/gpu-parity.sh pack [cuda|cuda-nvrtc|wgpu]
#       builds the release test binaries, `openexpert` (features <feature>,bench) and the bank
#       example with that cargo feature (cuda-nvrtc: CUDA with NVRTC-compiled kernels), strips them, bundles them with the assets they read
#       (SmolLM2, the GSM8K test split when fetched), compresses, and splits the bundle into
#       parts under .gpu/ small enough to carry one per call (GPU_PARITY_PART_MIB, default 30).
#   GPU machine, one call per part (carry .gpu/parts.sha256, .gpu/bundle.sha256 and that part):
#                           bash scripts/gpu-parity.sh stage
#       copies the carried parts to /tmp/oe-gpu/parts (kept while the machine stays warm; a new
#       bundle discards the parts of an earlier one).
#   GPU machine, last call: bash scripts/gpu-parity.sh stage && bash scripts/gpu-parity.sh run "$OUT"
#       checks and unpacks the bundle, runs the parity suite on the device, then the figures
#       (scoring 8x256, greedy decoding 1 and 16 rows, LoRA training steps, bank evaluation of 16
#       adapters packed per row), and writes summary.json, summary.md and every log to the output
#       folder. Each step has its own time limit; a failing step is recorded and the rest run.
#   GPU_PARITY_MINIMAL=1 (pack): only the device start, device_parity and precision_tiny, no assets.
#   GPU_PARITY_STEPS="start-device device-parity ..." (run): only these steps.
#   GPU_PARITY_TIME_SCALE=N (run): every step's time limit times N (a software Vulkan driver).
#   GPU_PARITY_QUICK=1 (run): the figures' smallest workloads (one timed run each, fewer training
#       steps): to check that every step runs, not to measure.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "gpu-parity: $*" >&2; }
die() { echo "gpu-parity: error: $*" >&2; exit 1; }

STAGE_DIR="${GPU_PARITY_STAGE:-/tmp/oe-gpu}"
PACK_DIR=".gpu"

# ---------------------------------------------------------------------------------------------
pack() {
  local feature="${1:-cuda}" device
  case "$feature" in
    cuda|cuda-nvrtc) device=cuda ;;
    wgpu) device=wgpu ;;
    *) die "pack: expected cuda, cuda-nvrtc or wgpu, found '$feature'" ;;
  esac
  command -v python3 >/dev/null || die "pack needs python3 (to read cargo's JSON messages)"
  command -v xz >/dev/null || die "pack needs xz (apt-get install xz-utils)"
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
  if [ "$device" = cuda ]; then bash scripts/install-cuda-deps.sh; fi
  local jobs="${GPU_PARITY_JOBS:-2}"
  local work
  work=$(mktemp -d)
  PACK_WORK="$work"
  trap 'rm -rf "$PACK_WORK"' EXIT
  mkdir -p "$work/b/bin" "$work/b/home/models" "$work/b/home/data"

  # Release binaries, located from cargo's JSON messages.
  local msgs="$work/cargo.json"
  : >"$msgs"
  say "building test binaries and tools with --features $feature (release, -j $jobs)"
  # GPU_PARITY_MINIMAL=1: only the device start, device_parity and precision_tiny (tiny models, no assets): one
  # part fewer than ten, for a short device budget.
  local minimal="${GPU_PARITY_MINIMAL:-0}" want="lm_core device_parity precision_tiny"
  if [ "$minimal" = 1 ]; then
    cargo test --release -j "$jobs" --no-run --message-format=json -p lm-core --features "$feature" \
      --lib --test device_parity --test precision_tiny >>"$msgs"
  else
    want="$want parity_smollm2 precision_smollm2 train_smollm2 apply_peft_logits openexpert bank_eval_ratio"
    cargo test --release -j "$jobs" --no-run --message-format=json -p lm-core --features "$feature" \
      --lib --test device_parity --test precision_tiny --test parity_smollm2 --test precision_smollm2 \
      --test train_smollm2 >>"$msgs"
    cargo test --release -j "$jobs" --no-run --message-format=json -p lora-zoo --features "lm-core/$feature" \
      --test apply_peft_logits >>"$msgs"
    cargo build --release -j "$jobs" --message-format=json -p openexpert --features "$feature,bench" \
      --bin openexpert >>"$msgs"
    cargo build --release -j "$jobs" --message-format=json -p kshot-eval --features "lm-core/$feature" \
      --example bank_eval_ratio >>"$msgs"
  fi
  python3 - "$msgs" "$work/b/bin" $want <<'EOF'
import json, shutil, sys, os
msgs, dest = sys.argv[1], sys.argv[2]
seen = {}
for line in open(msgs):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe:
        seen[m["target"]["name"].replace("-", "_")] = exe
want = sys.argv[3:]
missing = [w for w in want if w not in seen]
if missing:
    sys.exit(f"gpu-parity: error: cargo built no executable for {missing}")
for w in want:
    shutil.copy2(seen[w], os.path.join(dest, w))
EOF
  strip "$work"/b/bin/*
  # Shared libraries the binaries need beyond glibc and the C++ runtime (LLVM's libz3, libxml2,
  # libzstd, ... when the linker kept them): the GPU machine's image may lack them.
  mkdir -p "$work/b/lib"
  ldd "$work"/b/bin/* | awk '/=> \// { print $1, $3 }' | sort -u | while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libgcc_s.so*|libstdc++.so*|ld-linux*) ;;
      *) cp -L "$path" "$work/b/lib/$name" ;;
    esac
  done
  # wgpu finds Vulkan through the loader (libvulkan.so.1, opened at run time, so ldd does not
  # list it): bundle it in case the GPU machine's image has the driver but not the loader.
  if [ "$device" = wgpu ]; then
    local loader
    loader=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ { print $NF; exit }')
    if [ -n "$loader" ]; then cp -L "$loader" "$work/b/lib/libvulkan.so.1"; else say "note: no libvulkan.so.1 here (apt-get install libvulkan1) to bundle"; fi
  fi
  say "binaries need GLIBC up to $(objdump -T "$work"/b/bin/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1); bundled libraries: $(ls "$work/b/lib" | tr '\n' ' ')"

  # Assets: SmolLM2 and the GSM8K test split from this machine's openexpert home, when fetched.
  local home="${OPENEXPERT_HOME:-$HOME/.cache/openexpert}"
  if [ "$minimal" = 1 ]; then
    say "minimal bundle: no assets"
  elif [ -d "$home/models/smollm2-135m-instruct" ]; then
    cp -r "$home/models/smollm2-135m-instruct" "$work/b/home/models/"
  else
    say "note: SmolLM2 is not fetched under $home: the real-model tests and figures will be skipped there"
  fi
  if [ -d "$home/data/gsm8k-test" ]; then
    cp -r "$home/data/gsm8k-test" "$work/b/home/data/"
  elif [ "$minimal" != 1 ]; then
    say "note: gsm8k-test is not fetched under $home: the bank evaluation will be skipped there"
  fi
  {
    echo "device=$device"
    echo "feature=$feature"
    echo "build_root=$(pwd)"
    echo "commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cudarc_cuda_version=$CUDARC_CUDA_VERSION"
  } >"$work/b/manifest"

  rm -rf "$PACK_DIR"
  mkdir -p "$PACK_DIR"
  say "compressing ($(du -sh "$work/b" | cut -f1) uncompressed)"
  tar -C "$work/b" -cf - . | xz -T "$jobs" -6 >"$work/bundle.tar.xz"
  local part_mib="${GPU_PARITY_PART_MIB:-30}"
  split -b "${part_mib}M" -d -a 2 "$work/bundle.tar.xz" "$PACK_DIR/bundle.part-"
  (cd "$PACK_DIR" && sha256sum bundle.part-* >parts.sha256 && sha256sum -b "$work/bundle.tar.xz" | cut -d' ' -f1 >bundle.sha256)
  say "bundle: $(du -h "$work/bundle.tar.xz" | cut -f1) in $(ls "$PACK_DIR"/bundle.part-* | wc -l) part(s) of <= ${part_mib} MiB under $PACK_DIR/"
  local parts=("$PACK_DIR"/bundle.part-*)
  local last=$(( ${#parts[@]} - 1 ))
  for i in "${!parts[@]}"; do
    local cmd="bash scripts/gpu-parity.sh stage"
    [ "$i" -eq "$last" ] && cmd="$cmd && bash scripts/gpu-parity.sh run \"\$OUT\""
    echo "  run $((i + 1)): carry [\"$PACK_DIR/parts.sha256\", \"$PACK_DIR/bundle.sha256\", \"${parts[$i]}\"]  command: $cmd"
  done
}

# ---------------------------------------------------------------------------------------------
stage() {
  [ -f "$PACK_DIR/parts.sha256" ] || die "stage: $PACK_DIR/parts.sha256 was not carried (run 'pack' here and carry it with each part)"
  [ -f "$PACK_DIR/bundle.sha256" ] || die "stage: $PACK_DIR/bundle.sha256 was not carried (carry it with each part)"
  # Parts of another bundle (an earlier pack, staged while the machine stayed warm) would be
  # mixed into this one: start over when the bundle changes.
  if [ -f "$STAGE_DIR/parts/bundle.sha256" ] && ! cmp -s "$PACK_DIR/bundle.sha256" "$STAGE_DIR/parts/bundle.sha256"; then
    say "a different bundle was staged before: discarding its parts"
    rm -rf "$STAGE_DIR/parts"
  fi
  mkdir -p "$STAGE_DIR/parts"
  cp -f "$PACK_DIR/parts.sha256" "$PACK_DIR/bundle.sha256" "$STAGE_DIR/parts/"
  local moved=0 p
  for p in "$PACK_DIR"/bundle.part-*; do
    [ -e "$p" ] || continue
    cp -f "$p" "$STAGE_DIR/parts/"
    moved=$((moved + 1))
  done
  local have want
  have=$(cd "$STAGE_DIR/parts" && ls bundle.part-* 2>/dev/null | wc -l)
  want=$(wc -l <"$STAGE_DIR/parts/parts.sha256")
  say "staged $moved part(s) now; $have of $want under $STAGE_DIR/parts"
}

# ---------------------------------------------------------------------------------------------
run_step() { # name limit_s command...: runs one step, records rc and seconds, never aborts
  local name="$1" limit="$2"; shift 2
  if [ -n "${GPU_PARITY_STEPS:-}" ] && ! printf ' %s ' "$GPU_PARITY_STEPS" | grep -q " $name "; then
    skip_step "$name" "not in GPU_PARITY_STEPS"; return 0
  fi
  if [ ! -x "$1" ] && [ "$1" != sh ]; then skip_step "$name" "$(basename "$1") not in the bundle"; return 0; fi
  limit=$(( limit * ${GPU_PARITY_TIME_SCALE:-1} ))
  local log="$OUTDIR/logs/$name.log" t0 rc
  t0=$(date +%s.%N)
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  set -e
  local secs; secs=$(python3 -c "import time,sys; print(round(time.time()-float(sys.argv[1]),1))" "$t0")
  echo "$name $rc $secs" >>"$OUTDIR/steps.txt"
  if [ "$rc" -eq 0 ]; then say "ok    $name (${secs} s)"; else say "FAIL  $name: exit $rc after ${secs} s (log: logs/$name.log)"; tail -5 "$log" >&2 || true; fi
}

skip_step() { echo "$1 skipped 0 $2" >>"$OUTDIR/steps.txt"; say "skip  $1: $2"; }

run() {
  OUTDIR="${1:-${OUT:-gpu-parity-out}}"
  mkdir -p "$OUTDIR/logs"
  : >"$OUTDIR/steps.txt"
  local parts="$STAGE_DIR/parts" root="$STAGE_DIR/root"
  [ -f "$parts/parts.sha256" ] || die "run: nothing staged under $parts; carry the parts and run 'stage' first"
  (cd "$parts" && sha256sum -c --quiet parts.sha256) || die "run: a part is missing or damaged under $parts (see above); stage the missing ones"
  # Unpacked once per bundle: a root unpacked from another bundle is replaced.
  if ! cmp -s "$parts/bundle.sha256" "$root/bundle.sha256"; then
    local listed sum
    listed=$(awk '{ sub(/^\*/, "", $2); print $2 }' "$parts/parts.sha256")
    sum=$(cd "$parts" && cat $listed | sha256sum | cut -d' ' -f1)
    [ "$sum" = "$(cat "$parts/bundle.sha256")" ] || die "run: the joined parts do not match bundle.sha256 (parts of different bundles?); pack and stage again"
    rm -rf "$root"; mkdir -p "$root"
    (cd "$parts" && cat $listed) | xz -d | tar -C "$root" -xf -
    cp "$parts/bundle.sha256" "$root/bundle.sha256"
  fi
  # shellcheck disable=SC1091
  . "$root/manifest"
  local dev="${GPU_PARITY_DEVICE:-$device}"
  say "bundle of commit $commit, --features $feature, built $built; running on '$dev'"
  # Test binaries find their fixtures under the build machine's checkout path.
  if [ "$(cd "$build_root" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
    if [ -e "$build_root" ]; then
      say "note: $build_root exists and is not this checkout; fixture-reading tests may fail"
    else
      mkdir -p "$(dirname "$build_root")" && ln -s "$(pwd -P)" "$build_root"
    fi
  fi
  export OPENEXPERT_HOME="$root/home" OPENEXPERT_TEST_DEVICE="$dev" OPENEXPERT_DEVICE="$dev"
  local d
  for d in "$root/lib" /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/local/nvidia/lib64; do
    if [ -d "$d" ]; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
  done
  if [ "$dev" = wgpu ] && [ -z "${VK_ICD_FILENAMES:-}" ] && ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null && ! compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; then
    # An NVIDIA driver without its Vulkan manifest (containers often mount only the libraries):
    # point the loader at the driver's Vulkan entry library.
    if ldconfig -p 2>/dev/null | grep -q 'libGLX_nvidia\.so\.0'; then
      printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libGLX_nvidia.so.0", "api_version": "1.3"}}\n' >"$STAGE_DIR/nvidia_icd.json"
      export VK_ICD_FILENAMES="$STAGE_DIR/nvidia_icd.json"
      say "no Vulkan driver manifest on this machine: using $VK_ICD_FILENAMES (libGLX_nvidia.so.0)"
    else
      say "note: no Vulkan driver manifest and no libGLX_nvidia.so.0: wgpu may find no adapter"
    fi
  fi
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    cat "$root/manifest"
    echo "device: $dev"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "cpus: $(nproc)"
    if [ "$dev" = wgpu ]; then
      echo "Vulkan manifests: $(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null | tr '\n' ' ') VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-}"
      command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName|driverInfo|apiVersion'
    fi
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$root/bin/device_parity" | grep -i "not found" || echo "ldd: every library found"
  } >"$OUTDIR/environment.txt" 2>&1 || true
  local bin="$root/bin" model="$root/home/models/smollm2-135m-instruct"
  local t="--test-threads=1 --nocapture"

  # Parity suite: the device starts (or fails with a clear message), then device-vs-CPU and
  # device-vs-PyTorch checks. Each `parity:` line in the logs is one measured deviation.
  run_step start-device 120 "$bin/lm_core" device::tests $t
  run_step device-parity 300 "$bin/device_parity" $t
  # Mixed precision (docs/gpu.md, "Mixed precision"): f16/bf16 on the device against f32 and
  # against PyTorch's own f16/bf16; a precision the device lacks is skipped with a message.
  run_step precision-tiny 300 "$bin/precision_tiny" $t
  if [ -d "$model" ]; then
    run_step parity-smollm2 300 "$bin/parity_smollm2" $t
    run_step precision-smollm2 300 "$bin/precision_smollm2" $t
    run_step apply-peft-logits 300 "$bin/apply_peft_logits" $t
    run_step train-smollm2 300 "$bin/train_smollm2" $t
  else
    for s in parity-smollm2 precision-smollm2 apply-peft-logits train-smollm2; do skip_step "$s" "SmolLM2 not in the bundle"; done
  fi

  # Figures, on SmolLM2 (GPU_PARITY_QUICK=1: the smallest workloads, to check the steps run).
  local runs1=() runs16=(--score-runs 3) train=() bank="8 64 both 3"
  if [ "${GPU_PARITY_QUICK:-0}" = 1 ]; then
    runs1=(--score-runs 1 --runs 1) runs16=(--score-runs 1 --runs 1) train=(--steps 2 --warmup 1) bank="2 16 both 1"
  fi
  if [ -d "$model" ]; then
    run_step bench-score-decode1 300 "$bin/openexpert" bench-runtime --skip-embed "${runs1[@]}" \
      --json "$OUTDIR/runtime-decode1.json"
    run_step bench-score-decode16 300 "$bin/openexpert" bench-runtime --skip-embed --decode-batch 16 \
      "${runs16[@]}" --json "$OUTDIR/runtime-decode16.json"
    run_step bench-train 300 "$bin/openexpert" bench-train "${train[@]}" --json "$OUTDIR/train.json"
    # The same two figures in bf16 (tensor cores; f32 accumulation).
    run_step bench-score-decode16-bf16 300 "$bin/openexpert" bench-runtime --skip-embed \
      --decode-batch 16 --dtype bf16 "${runs16[@]}" --json "$OUTDIR/runtime-decode16-bf16.json"
    run_step bench-train-bf16 300 "$bin/openexpert" bench-train --dtype bf16 "${train[@]}" \
      --json "$OUTDIR/train-bf16.json"
    if [ ! -x "$bin/bank_eval_ratio" ]; then
      skip_step bank-16-packed "bank_eval_ratio not in the bundle"
    elif [ -d "$root/home/data/gsm8k-test" ]; then
      run_step bank-16-packed 400 sh -c "\"$bin/bank_eval_ratio\" $bank >\"$OUTDIR/bank_eval_ratio.json\""
    else
      skip_step bank-16-packed "gsm8k-test not in the bundle"
    fi
  else
    for s in bench-score-decode1 bench-score-decode16 bench-train bench-score-decode16-bf16 \
      bench-train-bf16 bank-16-packed; do skip_step "$s" "SmolLM2 not in the bundle"; done
  fi

  python3 - "$OUTDIR" <<'EOF'
import json, os, re, sys
out = sys.argv[1]
steps, parity = [], []
for line in open(os.path.join(out, "steps.txt")):
    name, rc, secs = line.split()[:3]
    note = " ".join(line.split()[3:])
    steps.append({"step": name, "status": "skipped" if rc == "skipped" else ("ok" if rc == "0" else f"exit {rc}"),
                  "seconds": float(secs), "note": note})
    log = os.path.join(out, "logs", name + ".log")
    if os.path.exists(log):
        for l in open(log, errors="replace"):
            # With --nocapture the first line a test prints follows libtest's "test name ... "
            # on the same line: look for the marker anywhere.
            at = l.find("parity: device=")
            if at >= 0:
                head, _, op = l[at + 8:].rstrip("\n").partition(" op=")
                kv = dict(p.split("=", 1) for p in head.split() if "=" in p)
                kv["op"] = op
                kv["step"] = name
                parity.append(kv)
figures = {}
for f in ["runtime-decode1.json", "runtime-decode16.json", "train.json",
          "runtime-decode16-bf16.json", "train-bf16.json", "bank_eval_ratio.json"]:
    p = os.path.join(out, f)
    if os.path.exists(p) and os.path.getsize(p):
        try:
            figures[f] = json.load(open(p))
        except ValueError:
            figures[f] = "unreadable"
env = open(os.path.join(out, "environment.txt")).read()
json.dump({"environment": env, "steps": steps, "parity": parity, "figures": figures},
          open(os.path.join(out, "summary.json"), "w"), indent=2)
md = ["# openexpert GPU parity run", "", "```", env.strip(), "```", "", "| step | status | seconds | note |", "|---|---|---|---|"]
md += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['note']} |" for s in steps]
md += ["", "| step | op | max deviation | tolerance | n |", "|---|---|---|---|---|"]
for p in parity:
    dev = p.get("max_abs", p.get("max_rel", p.get("compared_steps", "")))
    md.append(f"| {p['step']} | {p.get('op','')} | {dev} | {p.get('tol','')} | {p.get('n','')} |")
md += ["", "Figures: see the JSON files next to this summary (`summary.json` holds them all)."]
open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
failed = [s["step"] for s in steps if s["status"] not in ("ok", "skipped")]
print(f"gpu-parity: {len(steps) - len(failed)} of {len(steps)} steps ok or skipped; failed: {failed or 'none'}", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  stage) stage ;;
  run) shift; run "$@" ;;
  *) die "usage: $0 pack [cuda|cuda-nvrtc|wgpu] | stage | run [OUT_DIR]" ;;
esac
