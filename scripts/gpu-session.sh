#!/usr/bin/env bash
# The one script a GPU session runs: every package's CUDA tests (`-m gpu`, tests/test_gpu.py).
#
# Usage (from the repository root):
#   scripts/gpu-session.sh --fetch-wheels   # HERE, with network: fill .whl/ (see below)
#   scripts/gpu-session.sh                  # ON THE GPU MACHINE: run the tests
#   scripts/gpu-session.sh --cpu-check      # here, no GPU: the same steps on the CPU
#                                           # (COMPKIT_GPU_TESTS_ON_CPU=1, uv run), to check
#                                           # the script and the tests before a session
#
# Where it runs. A session lent a GPU runs this once through its device tool, which copies
# the working tree to a machine with one CUDA GPU and no network, and brings back what the
# script writes under $OUT (default /tmp/gpu-session-out; at most 8 files come back, so it
# writes exactly: summary.txt, session.log and one junit-<package>.xml per package).
#
# Why no `uv sync` / no carried .venv. The GPU machine cannot reach a package registry, so
# `uv sync --all-packages` fails there, and the workspace's .venv (about 6.4 GB with torch and
# CUDA wheels) is far over the tool's 64 MiB limit for carried paths. So the script uses the
# machine's own python3, which has PyTorch with CUDA, NumPy, h5py, matplotlib, scikit-learn,
# pandas, tensorboard, safetensors, pillow, tqdm and pytest preinstalled; puts the workspace's
# src/ folders on PYTHONPATH (the packages need no build step: their versions read
# "0+unknown" when not installed); and installs the few pure-Python dependencies the image
# lacks from wheels carried in .whl/ (about 13 MB, git-ignored): tyro, docstring-parser,
# typeguard, typing-extensions, gymnasium, farama-notifications, minigrid, pygame-ce (a
# binary wheel for CPython 3.12; minigrid imports it), stable-baselines3, pytest-socket.
# `--fetch-wheels` downloads them, at the versions of this checkout's uv environment.
# Device-tool call: command "bash scripts/gpu-session.sh", carry [".whl"], timeout_s 540.
# Where `uv` and a synced .venv with CUDA torch exist (a developer's own GPU machine), the
# script uses `uv run --no-sync` instead and needs no wheels.
#
# Budget: each package's pytest runs under `timeout`; the whole script stops starting new
# steps once TOTAL_BUDGET_S (default 450 s) is spent, so it ends within 8 minutes.
# Exit status: 0 when every package's GPU tests passed (none skipped for want of CUDA).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

WHEELS=(
    tyro docstring-parser typeguard typing-extensions gymnasium farama-notifications minigrid
    pygame-ce stable-baselines3 pytest-socket
)

if [[ ${1:-} == "--fetch-wheels" ]]; then
    mkdir -p .whl
    specs=()
    for name in "${WHEELS[@]}"; do
        version=$(uv run --no-sync python -c \
            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
            echo "gpu-session: $name is not in the uv environment; run uv sync --all-packages" >&2
            exit 2
        }
        specs+=("$name==$version")
    done
    rm -f .whl/*.whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${specs[@]}" || exit 2
    du -sh .whl
    exit 0
fi

OUT=${OUT:-${TMPDIR:-/tmp}/gpu-session-out}
mkdir -p "$OUT"
LOG=$OUT/session.log
SUMMARY=$OUT/summary.txt
: >"$LOG"
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-450}
START=$SECONDS
CPU_CHECK=0
if [[ ${1:-} == "--cpu-check" ]]; then
    CPU_CHECK=1
    export COMPKIT_GPU_TESTS_ON_CPU=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    unset COMPKIT_GPU_TESTS_ON_CPU # the real device, never the CPU stand-in
fi
export PYTHONUNBUFFERED=1

# package folder : its pytest timeout in seconds (measured on a 2-core CPU in CPU mode:
# 20-45 s each, most of it the smoke runs; the GPU machine has 16 cores).
STEPS=(
    "shared/compkit-utils:45"
    "packages/compile-seg:60"
    "packages/rim-cells:75"
    "packages/ilpo:60"
    "packages/leaps-karel:60"
    "packages/factored-attention-babyai:120"
)

say() { echo "$*" | tee -a "$LOG"; }

say "== gpu-session $(date -u +%FT%TZ) in $ROOT"
say "== git: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') $(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files"
say "== nvidia-smi"
timeout 20 nvidia-smi 2>&1 | tee -a "$LOG" || say "nvidia-smi failed or is missing"

# --- the Python that runs the tests ---------------------------------------------------------
PY=(python3)
if ((CPU_CHECK)); then
    PY=(uv run --no-sync python)
    say "== python: uv run --no-sync, CPU check (COMPKIT_GPU_TESTS_ON_CPU=1)"
elif command -v uv >/dev/null && [[ -x .venv/bin/python ]] &&
    timeout 60 uv run --no-sync python -c "import torch; assert torch.cuda.is_available()" \
        >/dev/null 2>&1; then
    PY=(uv run --no-sync python)
    say "== python: uv run --no-sync (the synced .venv)"
else
    shopt -s nullglob
    wheels=(.whl/*.whl)
    shopt -u nullglob
    if ((${#wheels[@]})); then
        say "== installing ${#wheels[@]} carried wheels into /tmp/gpu-session-site"
        timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/gpu-session-site "${wheels[@]}" >>"$LOG" 2>&1 ||
            say "!! installing the wheels failed (see above)"
        SITE=/tmp/gpu-session-site:
    else
        say "!! no .whl/*.whl: run scripts/gpu-session.sh --fetch-wheels here and carry .whl"
        SITE=
    fi
    SRC=$ROOT/shared/compkit-utils/src
    for pkg in packages/*/src; do SRC=$SRC:$ROOT/$pkg; done
    export PYTHONPATH=$SITE$SRC${PYTHONPATH:+:$PYTHONPATH}
    say "== python: $(command -v python3) with PYTHONPATH=$PYTHONPATH"
fi
"${PY[@]}" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" 2>&1 | tee -a "$LOG"
if ((!CPU_CHECK)) && ! "${PY[@]}" -c "import torch; assert torch.cuda.is_available()" 2>>"$LOG"; then
    say "!! CUDA is not available to this Python: the gpu tests would all skip; stopping"
    {
        echo "gpu-session: CUDA not available; no tests run (see session.log)"
    } >"$SUMMARY"
    exit 1
fi

# --- the packages' GPU tests ----------------------------------------------------------------
RESULTS=()
failed=0
for step in "${STEPS[@]}"; do
    pkg=${step%%:*}
    limit=${step##*:}
    name=$(basename "$pkg")
    left=$((TOTAL_BUDGET_S - (SECONDS - START)))
    ((limit > left)) && limit=$left
    if ((limit < 15)); then
        RESULTS+=("$name|not run: the session's time budget is spent|0")
        failed=1
        continue
    fi
    say "== $name: pytest $pkg/tests/test_gpu.py -m gpu (timeout ${limit}s)"
    began=$SECONDS
    timeout -k 10 "$limit" "${PY[@]}" -m pytest "$pkg/tests/test_gpu.py" -m gpu -q \
        -p no:cacheprovider -o junit_family=xunit2 --junitxml="$OUT/junit-$name.xml" \
        >>"$LOG" 2>&1
    status=$?
    took=$((SECONDS - began))
    case $status in
        0) verdict="passed" ;;
        124 | 137) verdict="TIMED OUT after ${limit}s" ;;
        1) verdict="FAILED" ;;
        5) verdict="NO TESTS collected" ;;
        *) verdict="ERROR (pytest exit $status)" ;;
    esac
    ((status == 0)) || failed=1
    RESULTS+=("$name|$verdict|$took")
    say "== $name: $verdict in ${took}s"
done

# --- summary --------------------------------------------------------------------------------
{
    echo "gpu-session $(date -u +%FT%TZ), $((SECONDS - START)) s"
    if ((CPU_CHECK)); then
        echo "CPU CHECK (COMPKIT_GPU_TESTS_ON_CPU=1): no GPU was used"
    else
        "${PY[@]}" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" 2>/dev/null
    fi
    printf '%-28s %-36s %6s  %s\n' package result seconds "junit: tests/failures/errors/skipped"
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r name verdict took <<<"$row"
        counts=$("${PY[@]}" - "$OUT/junit-$name.xml" <<'EOF' 2>/dev/null
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("{tests}/{failures}/{errors}/{skipped}".format(**total))
EOF
        )
        printf '%-28s %-36s %6s  %s\n' "$name" "$verdict" "$took" "${counts:-no junit file}"
    done
    if ((failed)); then
        echo "RESULT: FAILED (details in session.log and the junit files)"
    else
        echo "RESULT: all GPU tests passed"
    fi
} | tee "$SUMMARY" | tee -a "$LOG"
exit "$failed"
