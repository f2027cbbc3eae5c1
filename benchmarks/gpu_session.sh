#!/usr/bin/env bash
# Everything one lent GPU session (15 minutes of device time) does, in one prepared command:
#   1. the speed benchmark (benchmarks/speed/run.py): references and library cases, fresh process each;
#      phase "graph": the engine's whole-step CUDA graph (train.cuda_graph) against the references, in one job;
#      phase "speed": the eager/compile cases;
#   2. the digits benchmark, full protocol (benchmarks/digits/run.py), N runs at once, until a deadline;
#      unfinished runs are stopped with SIGTERM (they checkpoint) and resume in a later session. With
#      DIGITS_GRAPH=auto (default) a 40-step smoke run decides whether the runs use train.cuda_graph
#      (runs/bench_digits_gpu_graph) or run eagerly (runs/bench_digits_gpu).
# Results land in $OUT (speed.json/.md, digits_runs.tgz, logs). Data: the prepared mnist, usps and
# mnist_m folders copied into an ignored .devdata/ (../shared does not travel); packages the device
# image lacks (pydantic) as wheels in .whl/. Run from the repository root:
#   OUT=/tmp/out TOTAL=575 bash benchmarks/gpu_session.sh                      # speed, then digits
#   OUT=/tmp/out PHASES="graph digits" bash benchmarks/gpu_session.sh          # what is still missing
set -u
T0=$(date +%s)
TOTAL=${TOTAL:-575}          # seconds this script may take in all
SPEED_BUDGET=${SPEED_BUDGET:-260}
PARALLEL=${PARALLEL:-14}     # digits runs at once (eager; 14 ran at single-run speed under MPS on the H100)
GRAPH_PARALLEL=${GRAPH_PARALLEL:-18}  # with train.cuda_graph: each run needs little CPU, so more fit the 16 cores
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFERLAB_DATA=$PWD/.devdata
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}       # DEVICE=cpu NO_WHEELS=1 PY=.venv/bin/python ... : a quick dry run on a CPU machine
STEPS=${STEPS:-300}; WARMUP=${WARMUP:-30}; RESNET_STEPS=${RESNET_STEPS:-40}; RESNET_WARMUP=${RESNET_WARMUP:-8}
PHASES=${PHASES:-"graph digits"}  # any of: graph speed diagnose digits (diagnose: why the engine's reduce-overhead is slow)
want() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
elapsed() { echo $(( $(date +%s) - T0 )); }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import os, torch, transferlab, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', 'cpus', os.cpu_count())" 2>&1 | tee -a "$OUT/gpu.txt"

# --- 1. speed -----------------------------------------------------------------------------------
want speed || want graph || SPEED_BUDGET=0
SPEED_END=$(( T0 + SPEED_BUDGET ))
speed() {  # speed CASES... -- extra args; skipped once the speed budget is spent
  local left=$(( SPEED_END - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "speed budget spent; skipping: $*"; return; fi
  timeout "$left" $PY benchmarks/speed/run.py --device "$DEVICE" --data-root "$TRANSFERLAB_DATA" --out "$OUT/speed.json" \
    --merge --steps "$STEPS" --warmup "$WARMUP" --windows 5 --resnet-steps "$RESNET_STEPS" --resnet-warmup "$RESNET_WARMUP" \
    --case-timeout 150 "$@" 2>&1 \
    | grep -v "^|" | tee -a "$OUT/speed.log"
}
if want graph; then  # the issue's ratios need the references in the same job; most important first
  speed --cases digits_dann --compile cuda-graph --case-timeout 90
  speed --cases ref_loader_dann ref_plain_dann --compile none
  speed --cases ref_plain_dann --compile reduce-overhead --case-timeout 100
  speed --cases resnet50_dann --precision bf16 fp32 --compile cuda-graph --case-timeout 120
  speed --cases resnet50_dann --precision fp32 --compile none
  speed --cases digits_mcd digits_cdan_e digits_adda_stage1 digits_adda_stage2 --compile cuda-graph --case-timeout 90
  speed --cases resnet50_dann --precision bf16 --compile cuda-graph --set train.cudnn_benchmark=true --case-timeout 120
  speed --cases resnet50_dann --precision bf16 --compile none
fi
if want speed; then
  speed --cases ref_plain_dann digits_dann --compile none
  speed --cases resnet50_dann --precision fp32 bf16 --compile none
  speed --cases ref_loader_dann --compile none
  speed --cases digits_cdan_e digits_mcd digits_adda_stage1 digits_adda_stage2 --compile none
  speed --cases ref_plain_dann digits_dann --compile reduce-overhead --case-timeout 100
fi
echo "speed done at $(elapsed) s"

# --- 1b. diagnose: the engine under compile=reduce-overhead, with dynamo's recompile/graph-break logs --
if want diagnose; then
  SPEC='{"case": "digits_dann", "precision": "fp32", "compile": "reduce-overhead", "device": "'$DEVICE'",
         "batch_size": 128, "steps": 100, "warmup": 30, "windows": 2, "synthetic_n": 256, "data_root": "'$TRANSFERLAB_DATA'"}'
  [ "$DEVICE" = cpu ] && SPEC=${SPEC/reduce-overhead/default}
  TORCH_LOGS=recompiles,graph_breaks,cudagraphs timeout "${DIAGNOSE_S:-240}" $PY benchmarks/speed/run.py --_worker "$SPEC" \
    > "$OUT/diagnose.log" 2>&1
  echo "diagnose exit $? at $(elapsed) s; last lines:"; grep -v "^RESULT" "$OUT/diagnose.log" | tail -5
  grep "^RESULT" "$OUT/diagnose.log" | cut -c1-300
fi

# --- 2. digits benchmark, full protocol ---------------------------------------------------------
MPS=off
if want digits && command -v nvidia-cuda-mps-control >/dev/null; then  # lets the parallel runs' small kernels overlap
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d && timeout 40 $PY -c "import torch; assert torch.ones(4, device='cuda').sum().item() == 4"; then
    MPS=on
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
echo "MPS: $MPS" | tee -a "$OUT/gpu.txt"
RUNS=runs/bench_digits_gpu
GRAPH_SET=""
if want digits && [ "${DIGITS_GRAPH:-auto}" != off ]; then  # does the whole-step graph train here? (40 steps)
  rm -rf /tmp/graph_smoke
  if timeout 90 $PY -m transferlab.cli train configs/digits/mnist_usps_mcd.yaml --out /tmp/graph_smoke --no-progress \
       --data-root "$TRANSFERLAB_DATA" --set train.iterations=40 --set train.cuda_graph=true --set train.log_every=10 \
       > "$OUT/graph_smoke.log" 2>&1; then
    RUNS=runs/bench_digits_gpu_graph; GRAPH_SET="--set train.cuda_graph=true"; PARALLEL=$GRAPH_PARALLEL
  fi
  echo "graph smoke: $( [ -n "$GRAPH_SET" ] && echo ok || echo failed, eager runs) at $(elapsed) s"; tail -3 "$OUT/graph_smoke.log"
fi
LEFT=$(( T0 + TOTAL - 25 - $(date +%s) ))
if want digits && [ "$LEFT" -gt 30 ]; then
  $PY benchmarks/digits/run.py --tasks mnist_mnist_m mnist_usps usps_mnist --seeds 0 1 2 --parallel "$PARALLEL" \
    --threads 1 --data-root "$TRANSFERLAB_DATA" --runs $RUNS --results $RUNS --time-limit "$LEFT" $GRAPH_SET ${DIGITS_ARGS:-} 2>&1 \
    | tee "$OUT/digits.log"
fi
[ "$MPS" = on ] && (echo quit | nvidia-cuda-mps-control)
# finished runs without weights; stopped runs with their checkpoints (the next session resumes them) when
# that fits one returned file (16 MiB), else without (they restart from scratch)
if [ -d "$RUNS" ]; then
  find $RUNS -name result.json -printf '%h/checkpoints\n' > /tmp/finished_checkpoints 2>/dev/null
  tar czf "$OUT/digits_runs.tgz" --exclude=model.safetensors -X /tmp/finished_checkpoints $RUNS 2>/dev/null
  if [ "$(stat -c %s "$OUT/digits_runs.tgz" 2>/dev/null || echo 0)" -gt 15000000 ]; then
    tar czf "$OUT/digits_runs.tgz" --exclude=checkpoints --exclude=model.safetensors $RUNS 2>/dev/null
  fi
fi
echo "all done at $(elapsed) s"
