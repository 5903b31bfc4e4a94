#!/usr/bin/env bash
# Run from an empty working directory after `cargo build --release -p openexpert`; ~12 minutes on 2 cores.
# MoE on a task without an adapter in the bank (lcm): Rocket's ranking picks 4 experts from the
# K-shot; the mixture (untrained, router-trained, fully trained), Arrow, the uniform merge, the
# best single expert, a plain LoRA on the same data and the base are evaluated on 60 held-out items.
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
B="${OPENEXPERT_BIN:-$R/target/release/openexpert}"
T=lcm
head -n 16 $R/assets/datasets/$T/train.jsonl > kshot.jsonl
head -n 96 $R/assets/datasets/$T/train.jsonl > train.jsonl
EV="--task $R/assets/datasets/$T/eval.jsonl --limit 60 --max-new-tokens 64"
t0=$(date +%s)
$B rank-bank --bank $R/assets/bank --kshot kshot.jsonl --experts 4 --output rank.json --markdown rank.md
echo "rank-bank $(( $(date +%s) - t0 )) s"
EXPERTS=$(python3 -c "import json;r=json.load(open('rank.json'))['report'];s=r['selection']['selected'];print(','.join(r['names'][i] if isinstance(i,int) else i for i in s))")
echo "experts: $EXPERTS"
echo "$EXPERTS" > experts.txt
[ -d moe0 ] || $B moe build --bank $R/assets/bank --experts $EXPERTS --top-k 2 --output moe0
[ -d arrow ] || $B moe arrow --bank $R/assets/bank --experts $EXPERTS --top-k 2 --output arrow
t0=$(date +%s)
[ -d moe-router ] || $B moe train --moe moe0 --data train.jsonl --router-only --lr 1e-3 --epochs 2 --batch-size 8 --output moe-router
echo "moe train router-only $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
[ -d moe-full ] || $B moe train --moe moe0 --data train.jsonl --lr 1e-3 --epochs 2 --batch-size 8 --output moe-full
echo "moe train full $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
[ -d lora ] || $B train --data train.jsonl --lr 1e-3 --epochs 2 --batch-size 8 --output lora
echo "lora train $(( $(date +%s) - t0 )) s"
DIRS=$(python3 -c "print(','.join('$R/assets/bank/'+e for e in open('experts.txt').read().strip().split(',')))")
EACH=$(echo $DIRS | sed "s/,/ --each-adapter /g")
$B eval $EV --each-adapter $EACH --with-base --output each.json --markdown each.md
$B eval $EV --adapter $DIRS --adapter-weight 0.25,0.25,0.25,0.25 --output uniform.json
for m in moe0 arrow moe-router moe-full; do $B eval $EV --moe $m --output $m.json; done
$B eval $EV --adapter lora --output lora.json
$B moe routes --moe moe-router --input kshot.jsonl --output routes.json --svg routes.svg
echo done
