#!/usr/bin/env bash
# gpu_check.sh: build, test, sanitize and benchmark the fsae CUDA extension on a GPU machine.
#
# Meant for the lent NVIDIA H100 / H200 machine (see the device tool's KINDS.md): run from the
# repository root as one device call, e.g.
#
#     run(command="bash benchmarks/gpu_check.sh", timeout_s=500)
#
# Steps (each logged under $OUT, each PASS / FAIL / SKIP with its time in the final summary):
#   env        GPU name, driver, compute capability, python, torch, nvcc, compute-sanitizer
#   build      FSAE_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=<the card's arch, e.g. 9.0>
#              pip install --no-build-isolation --no-deps --no-index -e .
#   import     fsae.ops.build_info() must report cuda_compiled True
#   tests      python -m pytest -q tests -m cuda: the CUDA variants of the ops, augment, losses and eval tests
#              (all of tests/ops when no test is marked cuda)
#   memcheck   compute-sanitizer --tool memcheck --error-exitcode 1 over a snippet calling the four
#              ops on CUDA (fp32 / fp16 / bf16 / mixed, 1x1 maps, non-contiguous and channels-last
#              inputs, all-absent labels, backward of expansion_loss), with a parity check against
#              the reference; PYTORCH_NO_CUDA_MEMORY_CACHING=1 so every tensor is its own allocation
#   bench      python benchmarks/bench_ops.py --device cuda --json $OUT/bench_ops_cuda.json
#              (with torch.compile unless less than FSAE_GPU_CHECK_COMPILE_MIN_S seconds are left)
#   benchcpu   python benchmarks/bench_ops.py --device cpu --quick: the CPU kernels of the same build
#   racecheck  compute-sanitizer --tool racecheck over the snippet (ops only), if time is left
# Optional steps (name them in FSAE_GPU_CHECK_STEPS):
#   wheels     pip install --target the wheels carried in .whl/ (kornia, kornia_rs: the image lacks them;
#              see the device README) and put them on PYTHONPATH; needed by trainbench and toy
#   trainbench python benchmarks/bench_train_step.py --device cuda on voc_ppc_fsae.yaml at the paper's 448 px
#              crops, bf16 (FSAE_GPU_CHECK_TRAIN_ARGS replaces those arguments; FSAE_GPU_CHECK_TRAIN_COMPILE=1
#              adds --compile: the step with and without torch.compile, as train.compile does it)
#   toy        benchmarks/toy_quality.py on the GPU, one run per ';'-separated argument list in
#              FSAE_GPU_CHECK_TOY (at once, each in its own folder); JSON and the run logs come back
# Every step runs even when an earlier one failed (steps that need the build are skipped when it
# failed); the script exits 1 when a required step (build, import, tests, memcheck, bench) did not
# pass, else 0.
#
# What the machine has (KINDS.md, 2026-11): no network, so nothing can be pip-installed; python3 is
# /opt/torch/.venv/bin/python3 (Python 3.12) with torch 2.11.0+cu130, pytest, numpy, ninja and
# setuptools; nvcc 13.0 and compute-sanitizer (works on the Firecracker H100/H200 machines). The
# project pins torch 2.14.1 locally, but a torch wheel cannot be carried (64 MiB limit), so the
# extension is built against the image's torch. The working tree arrives without ignored files
# (no .venv, no build/, no *.so), so the build always starts from scratch on a fresh machine.
#
# Environment knobs:
#   OUT                          where logs go (default: ./outputs/gpu_check); at most 8 files come back
#   FSAE_PYTHON                  interpreter (default: python3)
#   FSAE_GPU_CHECK_STEPS         comma list of steps to run (default: all of the above)
#   FSAE_GPU_CHECK_BUDGET_S      total seconds for all steps (default 450): later steps get what is left
#   FSAE_GPU_CHECK_COMPILE_MIN_S bench runs torch.compile only with this much time left (default 200)
#   FSAE_GPU_CHECK_BENCH_ARGS    extra arguments for the CUDA benchmark (e.g. "--shapes train --no-compile")
#   FSAE_GPU_CHECK_TRAIN_ARGS    arguments of the trainbench step
#   FSAE_GPU_CHECK_TOY           the toy step's toy_quality.py argument lists, ';'-separated
#   FSAE_GPU_CHECK_TOY_BACKGROUND=1  run the toy step beside tests / memcheck, before the benchmarks
#   FSAE_GPU_CHECK_TOY_MAX_S     the toy step's time limit (default 420)
#   FSAE_GPU_CHECK_SKIP_BUILD=1  reuse an extension already built in place (a rerun on a warm machine)
#   FSAE_GPU_CHECK_DRY_RUN=1     print what each step would run, run nothing that needs a GPU or builds
#   FSAE_CHECK_DEVICE            device of the sanitizer snippet (default cuda; cpu to try it without a GPU)

set -u
set -o pipefail

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT=${OUT:-$REPO/outputs/gpu_check}
mkdir -p "$OUT" || exit 2
PY=${FSAE_PYTHON:-python3}
export PY
DRY=${FSAE_GPU_CHECK_DRY_RUN:-0}
BUDGET=${FSAE_GPU_CHECK_BUDGET_S:-450}
COMPILE_MIN=${FSAE_GPU_CHECK_COMPILE_MIN_S:-200}
STEPS=${FSAE_GPU_CHECK_STEPS:-env,build,import,tests,memcheck,bench,benchcpu,racecheck}
BENCH_ARGS=${FSAE_GPU_CHECK_BENCH_ARGS:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fsae_gpu_check.XXXXXX") || exit 2
export OUT WORK # read by the toy step's script
SUMMARY=$OUT/summary.txt
START=$SECONDS

export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" # the checkout's fsae, also for the snippet in $WORK
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 8)}

declare -a RESULTS=()
FAILED=0
BUILD_OK=1

want() { [[ ",$STEPS," == *",$1,"* ]]; }
remaining() { echo $((BUDGET - (SECONDS - START))); }
log() { echo "[gpu_check $(printf '%4d' $((SECONDS - START)))s] $*"; }

# record NAME STATUS SECONDS REQUIRED(0/1) [NOTE]
record() {
    local name=$1 status=$2 secs=$3 required=$4 note=${5:-}
    RESULTS+=("$(printf '%-10s %-8s %5ss  %s' "$name" "$status" "$secs" "$note")")
    if [[ $required == 1 && $status != PASS && $status != DRY ]]; then FAILED=1; fi
}

# run_step NAME REQUIRED MAX_SECONDS LOGFILE CMD...: run CMD under a timeout (the smaller of
# MAX_SECONDS and the budget left), append its output to LOGFILE, record the result. Returns the
# command's status (124 on timeout).
run_step() {
    local name=$1 required=$2 max=$3 logfile=$4
    shift 4
    local left limit t0 rc status note=""
    left=$(remaining)
    limit=$((max < left ? max : left))
    if [[ $DRY == 1 ]]; then
        local cmd="$*"
        cmd=${cmd//$'\n'/ ; }
        log "$name: [dry run] would run (timeout ${limit}s, log $logfile): $cmd"
        record "$name" DRY 0 "$required" "${cmd:0:100}"
        return 0
    fi
    if ((limit < 15)); then
        log "$name: SKIP, only ${left}s of the ${BUDGET}s budget left"
        record "$name" SKIP 0 "$required" "no time left"
        return 125
    fi
    log "$name: $* (timeout ${limit}s, log $(basename "$logfile"))"
    {
        echo "===== $name: $*"
        echo "===== started $(date -u +%FT%TZ), timeout ${limit}s"
    } >>"$logfile"
    t0=$SECONDS
    timeout --kill-after=15 "$limit" "$@" >>"$logfile" 2>&1
    rc=$?
    case $rc in
        0) status=PASS ;;
        124 | 137) status=TIMEOUT note="killed after ${limit}s" ;;
        *) status=FAIL note="exit $rc" ;;
    esac
    echo "===== $name: $status (rc=$rc) in $((SECONDS - t0))s" >>"$logfile"
    log "$name: $status in $((SECONDS - t0))s"
    if [[ $status != PASS ]]; then
        echo "----- last lines of $(basename "$logfile"):"
        tail -n 30 "$logfile" | cut -c1-300
        echo "-----"
    fi
    record "$name" "$status" $((SECONDS - t0)) "$required" "$note"
    return $rc
}

skip_step() { # NAME REQUIRED REASON
    log "$1: SKIP ($3)"
    record "$1" SKIP 0 "$2" "$3"
}

# --------------------------------------------------------------------------- the sanitizer snippet
# Calls each op on small CUDA tensors; FSAE_CHECK_PARITY=0 leaves out the reference comparison
# (and with it every torch reduction kernel), as racecheck wants.
cat >"$WORK/sanitize_ops.py" <<'PYEOF'
"""Exercise every fsae.ops op on one device, for compute-sanitizer (and a parity check)."""

import os
import sys

import torch

import fsae.ops as ops
from fsae.ops import reference

device = os.environ.get("FSAE_CHECK_DEVICE", "cuda")
parity = os.environ.get("FSAE_CHECK_PARITY", "1") == "1"
info = ops.build_info()
print("build_info:", info, "device:", device, "parity:", parity)
if device == "cuda" and not info["cuda_compiled"]:
    sys.exit("the extension has no CUDA kernels: nothing to sanitize")
gen = torch.Generator().manual_seed(0)
problems = []


def labels_for(batch, classes, kind="random"):
    labels = torch.zeros(batch, classes)
    if kind == "random":
        for b in range(batch):
            k = min(classes, int(torch.randint(1, 4, (1,), generator=gen)))
            labels[b, torch.randperm(classes, generator=gen)[:k]] = 1
    elif kind == "all":
        labels += 1
    return labels


def logits_for(shape, labels):
    x = torch.randn(shape, generator=gen) * 4
    x[:, 1:] += 8 * labels[:, :, None, None]  # confident present classes
    return x


def check(name, got, want, tol, scale=None):
    """Elements agree within tol relative, or tol * scale absolute (scale: the values' natural size,
    default the largest reference value)."""
    if not parity:
        return
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape or got.dtype != want.dtype:
        problems.append(f"{name}: {tuple(got.shape)} {got.dtype} vs {tuple(want.shape)} {want.dtype}")
        return
    if got.is_floating_point():
        g, w = got.double(), want.double()
        if scale is None:
            scale = max(float(w.abs().max()) if w.numel() else 0.0, 1e-12)
        bad = ~torch.isclose(g, w, rtol=tol, atol=tol * scale, equal_nan=True)
    else:
        bad = got != want
    frac = float(bad.double().mean()) if bad.numel() else 0.0
    if (got.dim() == 0 and frac > 0) or frac > 2e-3:
        problems.append(f"{name}: {frac:.2%} of elements differ from the reference")


cases = [
    # (B, C+1, H, W), dtype, labels kind, layout
    ((2, 21, 17, 23), torch.float32, "random", "contiguous"),
    ((1, 2, 1, 1), torch.float32, "random", "contiguous"),
    ((3, 5, 1, 1), torch.float16, "random", "contiguous"),
    ((2, 21, 33, 47), torch.float16, "random", "channels_last"),
    ((2, 81, 41, 41), torch.bfloat16, "random", "contiguous"),
    ((2, 21, 64, 70), torch.float32, "none", "sliced"),
    ((1, 21, 9, 130), torch.float32, "all", "contiguous"),
    ((2, 21, 56, 56), torch.float64, "random", "contiguous"),
]
for shape, dtype, kind, layout in cases:
    batch, channels, height, width = shape
    tag = f"{tuple(shape)} {str(dtype)[6:]} {kind} {layout}"
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    labels = labels_for(batch, channels - 1, kind)
    cams = torch.randn(batch, channels - 1, height, width if layout != "sliced" else 2 * width, generator=gen)
    logits = logits_for((batch, channels, height, width if layout != "sliced" else 2 * width), labels)
    student = logits + 0.5 * torch.randn(logits.shape, generator=gen)
    cams, logits, student = (t.to(device, dtype) for t in (cams, logits, student))
    labels = labels.to(device)
    if layout == "sliced":
        cams, logits, student = cams[..., ::2], logits[..., ::2], student[..., ::2]
    elif layout == "channels_last":
        cams, logits, student = (t.contiguous(memory_format=torch.channels_last) for t in (cams, logits, student))
    present = labels.bool()

    for mode in ("max", "minmax"):
        out = ops.cam_normalize(cams, labels, mode=mode)
        check(f"cam_normalize {mode} {tag}", out, reference.cam_normalize(cams, labels, mode), tol)
    norm = ops.cam_normalize(cams, None)
    check(f"cam_normalize nolabels {tag}", norm, reference.cam_normalize(cams, None), tol)
    for kwargs in ({"bg_power": 8.0}, {"bg_threshold": 0.3}):
        seeds = ops.cams_to_labels(norm, present, **kwargs)
        check(f"cams_to_labels {kwargs} {tag}", seeds, reference.cams_to_labels(norm, present, **kwargs), 0)

    for absent, ring_kernel in (("zero", 3), ("exclude", 5), ("zero", 1)):
        masks = ops.expansion_masks(logits, labels, ring_kernel=ring_kernel, absent=absent)
        want = reference.expansion_masks(logits, labels, ring_kernel=ring_kernel, absent=absent) if parity else None
        for field in masks._fields:
            if parity:
                check(f"expansion_masks.{field} {absent} k={ring_kernel} {tag}", getattr(masks, field),
                      getattr(want, field), tol)

    for boundary_weight, absent in ((None, "zero"), (0.5, "exclude")):
        s = student.detach().clone().requires_grad_(True)
        loss, masks = ops.expansion_loss(s, logits, labels, absent=absent, boundary_weight=boundary_weight)
        loss.backward()
        if parity:
            r = student.detach().clone().requires_grad_(True)
            ref_loss, _ = reference.expansion_loss(r, logits, labels, absent=absent, boundary_weight=boundary_weight)
            ref_loss.backward()
            name = f"expansion_loss bw={boundary_weight} {absent} {tag}"
            check(name + " loss", loss, ref_loss, tol)
            # d(mean CE)/d logit = w (softmax - onehot) / (B h w): at most max(1, bw) / (B h w). A confident
            # target channel's softmax - 1 cancels (one ulp of the log-sum-exp, in both), so the absolute
            # error is measured against that bound, not against the largest gradient of the case.
            bound = max(1.0, boundary_weight or 1.0) / (s.shape[0] * s.shape[2] * s.shape[3])
            check(name + " grad", s.grad, r.grad, tol, scale=bound)
            if not torch.isfinite(loss).all():
                problems.append(f"{name}: loss is not finite")

# mixed dtypes: fp16 student, fp32 teacher (computed in the promoted dtype)
labels = labels_for(2, 20).to(device)
teacher = logits_for((2, 21, 19, 19), labels.cpu()).to(device)
student = (teacher + 0.3).half().requires_grad_(True)
loss, _ = ops.expansion_loss(student, teacher, labels)
loss.backward()

if device == "cuda":
    torch.cuda.synchronize()
if problems:
    print("PARITY MISMATCH:")
    print("\n".join("  " + p for p in problems))
    sys.exit(1)
print(f"sanitize_ops: OK ({len(cases)} cases on {device}{', parity checked' if parity else ''})")
PYEOF

# toy_quality.py runs on the GPU: one per ';'-separated argument list in FSAE_GPU_CHECK_TOY, at once, each in
# $WORK/toy<i>. Their JSON, logs and per-run metrics come back as one file (the device returns at most 8), also
# after a timeout. With FSAE_GPU_CHECK_TOY_BACKGROUND=1 this starts right after the import step and runs beside
# the tests and the sanitizer (correctness checks, not timings); the benchmarks wait for it.
toy_step() {
    IFS=';' read -r -a TOY_RUNS <<<"${FSAE_GPU_CHECK_TOY:---jobs 3 --no-crf --scales 0.5,0.75}"
    # shellcheck disable=SC2016 # expanded by the inner bash
    TOY_SCRIPT='i=0; for args in "$@"; do
  OMP_NUM_THREADS=2 "$PY" benchmarks/toy_quality.py --output-dir "$WORK/toy$i" --json "$WORK/toy$i/toy_quality.json" \
    $args >"$WORK/toy$i/toy_quality.log" 2>&1 & i=$((i + 1)); done
rc=0; for job in $(jobs -p); do wait "$job" || rc=1; done
i=0; for args in "$@"; do echo "===== toy$i: $args"; cat "$WORK/toy$i/toy_quality.log"; i=$((i + 1)); done; exit $rc'
    for ((i = 0; i < ${#TOY_RUNS[@]}; i++)); do mkdir -p "$WORK/toy$i"; done
    run_step toy 0 "${FSAE_GPU_CHECK_TOY_MAX_S:-420}" "$WORK/toy.log" bash -c "$TOY_SCRIPT" toy "${TOY_RUNS[@]}"
    if [[ $DRY != 1 ]]; then
        grep -E '^===== toy[0-9]|^\| (seed|best|compl|train)|error' "$WORK/toy.log" | cut -c1-200
        (cd "$WORK" && find toy* -maxdepth 4 \( -name metrics.json -o -name log.jsonl -o -name '*.log' \
            -o -name config.yaml -o -name toy_quality.json \) -print0 | tar czf "$OUT/toy_runs.tgz" --null -T -)
    fi
    printf '%s\n' "${RESULTS[-1]}" >"$WORK/toy.record"
}

# --------------------------------------------------------------------------- steps

echo "fsae gpu_check: repo $REPO, logs in $OUT, budget ${BUDGET}s, steps $STEPS$([[ $DRY == 1 ]] && echo ', DRY RUN')"
: >"$SUMMARY"

GPU_DESC="n/a"
ARCH=""
if want env; then
    t0=$SECONDS
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "host: $(uname -a)"
        echo "cpus: $(nproc 2>/dev/null)"
        if command -v nvidia-smi >/dev/null 2>&1; then
            nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.sm,clocks.max.sm --format=csv
            GPU_DESC=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -1)
            ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')
        else
            echo "nvidia-smi: not found"
        fi
        echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
        "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1
        "$PY" -c "import setuptools, ninja, pytest; print('setuptools', setuptools.__version__, 'pytest', pytest.__version__)" 2>&1
        echo "nvcc: $(command -v nvcc || echo 'not on PATH')"
        nvcc --version 2>&1 | tail -2
    } >"$WORK/env.txt" 2>&1
    cat "$WORK/env.txt"
    record env PASS $((SECONDS - t0)) 0 ""
fi
ARCH=${FSAE_GPU_ARCH:-${ARCH:-9.0}}

# CUDA toolkit: $CUDA_HOME, else /usr/local/cuda, else the folder above nvcc; a toolkit has both bin/nvcc and
# include/cuda_runtime.h (an nvcc on the PATH can be a wrapper script outside the toolkit).
if [[ -z ${CUDA_HOME:-} ]]; then
    for candidate in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /)")")")"; do
        if [[ -x $candidate/bin/nvcc && -f $candidate/include/cuda_runtime.h ]]; then
            CUDA_HOME=$candidate && break
        fi
    done
    CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
fi
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
SANITIZER=""
for candidate in "$(command -v compute-sanitizer 2>/dev/null)" "$CUDA_HOME/bin/compute-sanitizer" \
    "$CUDA_HOME/compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    if [[ -n $candidate && -x $candidate ]]; then SANITIZER=$candidate && break; fi
done
echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$MAX_JOBS compute-sanitizer=${SANITIZER:-not found}"

if want wheels; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        t0=$SECONDS
        if [[ $DRY == 1 ]]; then
            record wheels DRY 0 0 "$(echo .whl/*.whl)"
        elif "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/fsae_site .whl/*.whl >>"$OUT/build.log" 2>&1; then
            export PYTHONPATH="$PYTHONPATH:/tmp/fsae_site"
            record wheels PASS $((SECONDS - t0)) 0 "$(cd .whl && echo *.whl | cut -c1-90)"
        else
            tail -n 5 "$OUT/build.log"
            record wheels FAIL $((SECONDS - t0)) 0 "see build.log"
        fi
    else
        record wheels SKIP 0 0 "no .whl/ folder"
    fi
fi

if want build; then
    if [[ ${FSAE_GPU_CHECK_SKIP_BUILD:-0} == 1 ]] && ls fsae/_C*.so >/dev/null 2>&1; then
        skip_step build 0 "FSAE_GPU_CHECK_SKIP_BUILD=1, reusing $(echo fsae/_C*.so)"
    else
        FSAE_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH \
            run_step build 1 330 "$OUT/build.log" \
            "$PY" -m pip install -v --no-build-isolation --no-deps --no-index -e . ||
            BUILD_OK=0
    fi
fi

IMPORT_CHECK='import fsae.ops, torch; info = fsae.ops.build_info(); print(info, torch.__version__)
assert info["cuda_compiled"], "fsae._C was built without CUDA kernels"'
if want import; then
    if [[ $BUILD_OK == 1 ]]; then
        run_step import 1 60 "$OUT/build.log" "$PY" -c "$IMPORT_CHECK" || BUILD_OK=0
        [[ $DRY == 1 ]] || tail -n 2 "$OUT/build.log" | head -1
    else
        skip_step import 1 "build failed"
    fi
fi

TOY_PID=""
if want toy && [[ ${FSAE_GPU_CHECK_TOY_BACKGROUND:-0} == 1 && $DRY != 1 ]]; then
    log "toy: starting in the background"
    toy_step >"$WORK/toy.stdout" 2>&1 &
    TOY_PID=$!
fi

# pytest exits 5 when no test is selected: then run all of tests/ops. ($0 is the interpreter.)
# shellcheck disable=SC2016
PYTEST_CMD='"$0" -m pytest -q -p no:cacheprovider tests -m cuda; rc=$?
if [ "$rc" = 5 ]; then echo "no test is marked cuda: running all of tests/ops"; "$0" -m pytest -q -p no:cacheprovider tests/ops; rc=$?; fi
exit $rc'
if want tests; then
    if [[ $BUILD_OK == 1 ]]; then
        run_step tests 1 200 "$OUT/pytest.log" bash -c "$PYTEST_CMD" "$PY"
        [[ $DRY == 1 ]] || grep -E '^=* ?[0-9]+ (passed|failed|error|skipped|deselected)' "$OUT/pytest.log" | tail -2
    else
        skip_step tests 1 "no CUDA extension"
    fi
fi

sanitize() { # TOOL REQUIRED MAX_SECONDS PARITY
    local tool=$1 required=$2 max=$3 parity=$4
    if [[ $BUILD_OK != 1 ]]; then
        skip_step "$tool" "$required" "no CUDA extension"
    elif [[ -z $SANITIZER && $DRY != 1 ]]; then
        skip_step "$tool" "$required" "compute-sanitizer not found"
    else
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 FSAE_CHECK_PARITY=$parity \
            run_step "$tool" "$required" "$max" "$OUT/sanitizer.log" \
            "${SANITIZER:-compute-sanitizer}" --tool "$tool" --error-exitcode 1 --print-limit 50 \
            "$PY" "$WORK/sanitize_ops.py"
        [[ $DRY == 1 ]] || grep -E 'SUMMARY|sanitize_ops: OK|PARITY MISMATCH' "$OUT/sanitizer.log" | tail -3
    fi
}
want memcheck && sanitize memcheck 1 150 1

if [[ -n $TOY_PID ]]; then # the toy step, started in the background after the import step, ends first
    log "toy: waiting for the background run"
    wait "$TOY_PID"
    cat "$WORK/toy.stdout"
    RESULTS+=("$(cat "$WORK/toy.record" 2>/dev/null || echo 'toy        FAIL         ?s  no result')")
fi

if want bench; then
    if [[ $BUILD_OK == 1 ]]; then
        extra=()
        if [[ $DRY != 1 && $(remaining) -lt $COMPILE_MIN && $BENCH_ARGS != *--no-compile* ]]; then
            log "bench: less than ${COMPILE_MIN}s left, adding --no-compile"
            extra+=(--no-compile)
        fi
        # shellcheck disable=SC2086 # BENCH_ARGS is a list of words on purpose
        run_step bench 1 300 "$OUT/bench.log" \
            "$PY" benchmarks/bench_ops.py --device cuda --json "$OUT/bench_ops_cuda.json" ${extra[@]+"${extra[@]}"} $BENCH_ARGS
        if [[ $DRY != 1 && -f $OUT/bench.log ]]; then
            # the table (or, after a timeout, the rows written so far) into the reply
            if ! grep -q '^| shape' "$OUT/bench.log" && [[ -s $OUT/bench_ops_cuda.json ]]; then
                "$PY" benchmarks/bench_ops.py --table-from "$OUT/bench_ops_cuda.json" >>"$OUT/bench.log" 2>&1
            fi
            sed -n '/^| shape/,/^$/p;/^- /p' "$OUT/bench.log" | cut -c1-220
        fi
    else
        skip_step bench 1 "no CUDA extension"
    fi
fi

if want benchcpu; then
    if [[ $BUILD_OK == 1 ]]; then
        run_step benchcpu 0 60 "$OUT/bench.log" "$PY" benchmarks/bench_ops.py --device cpu --quick
    else
        skip_step benchcpu 0 "no extension"
    fi
fi

if want trainbench; then
    TRAIN_ARGS=${FSAE_GPU_CHECK_TRAIN_ARGS:---config recipes/configs/voc_ppc_fsae.yaml --set data.crop_size=448 --mixed-precision bf16}
    TRAIN_LIMIT=150
    if [[ ${FSAE_GPU_CHECK_TRAIN_COMPILE:-0} == 1 ]]; then  # compiled twins of the rows (train.compile), same run
        TRAIN_ARGS="$TRAIN_ARGS --compile"
        TRAIN_LIMIT=420
    fi
    # shellcheck disable=SC2086 # a list of words on purpose
    run_step trainbench 0 "$TRAIN_LIMIT" "$OUT/bench.log" \
        "$PY" benchmarks/bench_train_step.py --device cuda --json "$OUT/bench_train_step_cuda.json" $TRAIN_ARGS
    [[ $DRY == 1 ]] || sed -n '/^| FSAE/,/^$/p;/^- FSAE on takes/p;/^- compiled/p' "$OUT/bench.log" | cut -c1-220
fi

if want toy && [[ -z $TOY_PID ]]; then
    toy_step
fi

want racecheck && sanitize racecheck 0 150 0

# --------------------------------------------------------------------------- summary
BUILD_INFO="n/a"
if [[ $DRY != 1 ]]; then
    BUILD_INFO=$("$PY" -c 'import fsae.ops; print(fsae.ops.build_info())' 2>/dev/null | tail -1)
fi
{
    echo
    echo "===== fsae gpu_check summary ($(date -u +%FT%TZ), $((SECONDS - START))s of ${BUDGET}s)"
    echo "gpu:        $GPU_DESC"
    echo "arch list:  $ARCH   CUDA_HOME: $CUDA_HOME"
    echo "build_info: ${BUILD_INFO:-n/a}"
    printf '%s\n' "${RESULTS[@]}"
    if [[ $FAILED == 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
    echo "logs: $(cd "$OUT" && echo *)"
} | tee -a "$SUMMARY"
[[ -f $WORK/env.txt ]] && cat "$WORK/env.txt" >>"$SUMMARY"
rm -rf "$WORK"
exit "$FAILED"
