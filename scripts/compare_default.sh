#!/usr/bin/env bash
# The whole default comparison: teacher, student with KD, the same student alone (alpha=0),
# then the evaluation report in reports/. Extra arguments go to every training stage.
#   scripts/compare_default.sh [--seed_everything 1 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -m distill.train teacher --overwrite true "$@"
"$PY" -m distill.train student --overwrite true "$@"
"$PY" -m distill.train student --overwrite true --model.method.alpha 0 --run_dir checkpoints/student_alone "$@"
"$PY" -m distill.evaluate --teacher checkpoints/teacher/best.ckpt \
    --student checkpoints/student/best.ckpt checkpoints/student_alone/best.ckpt --out_dir reports
