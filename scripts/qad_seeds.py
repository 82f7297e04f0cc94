"""Quantization-aware distillation against post-training int8, over seeds, on a trained student.

    python scripts/qad_seeds.py --seeds 3 --out checkpoints/qad_seeds

For every seed: the qat stage (its recipe, ``--seed_everything SEED``) on ``--student``, against
``--teacher``; then one ``distill.compress`` over the student and every seed's network, so every file is
measured side by side in one run: the student in ONNX fp32, its post-training int8 file (one: calibration
is deterministic), and each seed's quantization-aware int8 file. Prints and writes ``OUT/summary.md`` and
``OUT/summary.json``: test accuracy of each, mean and range over seeds, agreement of each int8 file with
its network, and batch-1 latency. A finished seed (its ``metrics.json``) is reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(args: list[str], log: Path) -> None:
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(args[:4])} ... failed ({code}); see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--student", default="checkpoints/student/best.ckpt")
    parser.add_argument("--teacher", default="checkpoints/teacher/best.ckpt")
    parser.add_argument("--out", default="checkpoints/qad_seeds")
    parser.add_argument("--extra", default="", help="more qat stage arguments, one string")
    parser.add_argument("--latency_runs", type=int, default=300, help="distill.compress --latency_runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.seeds):
        run_dir = out / f"qat-seed{seed}"
        if not (run_dir / "metrics.json").is_file():
            run(["-m", "distill.train", "qat", "--model.source_ckpt", args.student, "--model.teacher", args.teacher,
                 "--seed_everything", str(seed), "--run_dir", str(run_dir), "--overwrite", "true",
                 "--trainer.enable_progress_bar", "false", *args.extra.split()], out / f"qat-seed{seed}.log")
        runs.append(run_dir / "best.ckpt")
    compressed = out / "compressed"
    run(["-m", "distill.compress", "--ckpt", args.student, *map(str, runs), "--out_dir", str(compressed),
         "--latency_runs", str(args.latency_runs)],
        out / "compress.log")
    rows = {r["name"]: r for r in json.loads((compressed / "compress.json").read_text())["artifacts"]}
    student = next(r for r in rows.values() if r["format"] == "onnx fp32")["role"]
    qad = [rows[f"{run.parent.name} (ONNX int8)"] for run in runs]
    fp32, ptq = rows[f"{student} (ONNX fp32)"], rows[f"{student} (ONNX int8)"]
    accs = [100 * r["acc"] for r in qad]
    summary = {
        "student_fp32": 100 * fp32["acc"], "ptq_int8": 100 * ptq["acc"], "qad_int8": accs,
        "qad_int8_mean": statistics.mean(accs), "qad_int8_range": [min(accs), max(accs)],
        "qad_minus_fp32_mean": statistics.mean(accs) - 100 * fp32["acc"],
        "qad_minus_ptq_mean": statistics.mean(accs) - 100 * ptq["acc"],
        "qad_agreement_with_network": [r["parity"]["top1_agreement"] for r in qad],
        "latency_ms": {"fp32": fp32["latency_ms"], "ptq_int8": ptq["latency_ms"],
                       "qad_int8": [r["latency_ms"] for r in qad]},
        "seeds": list(range(args.seeds)),
    }
    lines = ["| file | test acc % | batch-1 ms |", "|---|---|---|",
             f"| student, ONNX fp32 | {summary['student_fp32']:.2f} | {fp32['latency_ms']:.3f} |",
             f"| student, post-training int8 | {summary['ptq_int8']:.2f} | {ptq['latency_ms']:.3f} |"]
    lines += [f"| QAD int8, seed {s} | {a:.2f} | {r['latency_ms']:.3f} |" for s, (a, r) in enumerate(zip(accs, qad))]
    lines += ["", f"QAD int8: mean {summary['qad_int8_mean']:.2f} % (range {min(accs):.2f}-{max(accs):.2f}); "
              f"against fp32 {summary['qad_minus_fp32_mean']:+.2f} points, against post-training int8 "
              f"{summary['qad_minus_ptq_mean']:+.2f} points."]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
