#!/usr/bin/env bash
# The issue-3 quality suite for one predictors folder, dense against sparse on the same inputs
# (`eval --compare`): perplexity on the first 131,072 tokens of gutenberg-val and on WikiText-2 test,
# and the five zero-shot sets. The long inputs are cut into parts that run side by side (one GPU
# serves them all; the host's cores do the rest); bench/quality_table.mjs adds the parts up.
#
#   bash bench/quality_suite.sh MODEL PREDICTORS DATA_DIR OUT_DIR [BACKEND] [EXTRA_EVAL_ARGS...]
#
# DATA_DIR holds gutenberg-val.txt, wikitext-2-raw-test.txt and eval/*.jsonl (../shared/data or a copy).
# Each part writes OUT_DIR/<part>.json (eval's --json object) and OUT_DIR/<part>.err; OUT_DIR/summary.json
# holds the added-up figures. Time: on an H200 host (16 cores), the 18m model, the whole suite took
# 151 s side by side with evaluation's statistics on the device (238 s with them on the host; the
# perplexity parts about twice as fast, the zero-shot ones up to a quarter slower when fifteen
# processes share the GPU: docs/benchmarks.md, "Evaluation throughput").
set -u
if [ $# -lt 4 ]; then
  echo "usage: bash bench/quality_suite.sh MODEL PREDICTORS DATA_DIR OUT_DIR [BACKEND] [EXTRA_EVAL_ARGS...]" >&2
  exit 2
fi
model=$1 pred=$2 data=$3 out=$4 backend=${5:-auto}
shift $(( $# < 5 ? $# : 5 ))
for f in gutenberg-val.txt wikitext-2-raw-test.txt eval/copa.jsonl eval/piqa.jsonl eval/winogrande.jsonl eval/lambada_openai.jsonl eval/arc_easy.jsonl; do
  [ -f "$data/$f" ] || { echo "quality_suite: missing $data/$f" >&2; exit 2; }
done
mkdir -p "$out/parts"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cli=(node "$here/dist/src/cli.js")

# WikiText-2 in 4 parts at line boundaries; the larger zero-shot sets in chunks of whole items.
split -n l/4 -d "$data/wikitext-2-raw-test.txt" "$out/parts/wiki."
split -n l/4 -d "$data/eval/lambada_openai.jsonl" "$out/parts/lambada."
split -n l/2 -d "$data/eval/arc_easy.jsonl" "$out/parts/arc_easy."
split -n l/2 -d "$data/eval/piqa.jsonl" "$out/parts/piqa."

run() { # name, eval args...
  local name=$1; shift
  "${cli[@]}" eval --model "$model" --backend "$backend" --predictors "$pred" --compare --json "$@" "${extra[@]}" \
    > "$out/$name.json" 2> "$out/$name.err" || { echo "quality_suite: $name failed (see $out/$name.err)" >&2; return 1; }
}
extra=("$@")
pids=()
run val --task ppl --data "$data/gutenberg-val.txt" --limit 131072 --window 512 & pids+=($!)
for p in "$out"/parts/wiki.*; do run "wiki.${p##*.}" --task ppl --data "$p" --window 512 & pids+=($!); done
for p in "$out"/parts/lambada.*; do run "lambada.${p##*.}" --task lambada --data "$p" & pids+=($!); done
for p in "$out"/parts/arc_easy.*; do run "arc_easy.${p##*.}" --task arc_easy --data "$p" & pids+=($!); done
for p in "$out"/parts/piqa.*; do run "piqa.${p##*.}" --task piqa --data "$p" & pids+=($!); done
run winogrande --task winogrande --data "$data/eval/winogrande.jsonl" & pids+=($!)
run copa --task copa --data "$data/eval/copa.jsonl" & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
# One file with every figure (a part that failed or was cut short is named on stderr), then the tables.
node "$here/bench/quality_table.mjs" "$out" --json > "$out/summary.json" || failed=1
node "$here/bench/quality_table.mjs" "$out" || failed=1
exit $failed
