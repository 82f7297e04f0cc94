#!/usr/bin/env bash
# make demo: the teacher, then the KD student and the same student alone (alpha=0) at once, one CPU thread
# each (on 2 cores about the time of one run at two threads, and the thread count the seeds runner measures
# with), then the report comparing all three in reports/. Extra arguments go to every training stage.
#   scripts/demo.sh [--seed_everything 1 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -m distill.train teacher --overwrite true "$@"
echo "The same student alone (alpha=0) trains beside the KD student: checkpoints/student_alone.log"
OMP_NUM_THREADS=1 "$PY" -m distill.train student --overwrite true --model.method.alpha 0 \
    --run_dir checkpoints/student_alone --trainer.enable_progress_bar false "$@" > checkpoints/student_alone.log 2>&1 &
alone=$!
trap 'kill "$alone" 2>/dev/null || true' EXIT  # a failed or interrupted KD run stops its twin too
OMP_NUM_THREADS=1 "$PY" -m distill.train student --overwrite true "$@"
if ! wait "$alone"; then
    echo "the student alone failed; its log: checkpoints/student_alone.log" >&2
    exit 1
fi
"$PY" -m distill.evaluate --teacher checkpoints/teacher/best.ckpt \
    --student checkpoints/student/best.ckpt checkpoints/student_alone/best.ckpt --out_dir reports
