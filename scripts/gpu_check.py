"""Quick check of the GPU path: both stages of a CIFAR-100 recipe for a few hundred steps on one device.

Reports training throughput (images/s, after warm-up) and peak GPU memory per stage, so the
single- and multi-GPU paths can be checked in minutes rather than a 240-epoch run.

    python scripts/gpu_check.py                       # resnet32x4 -> resnet8x4, 300 steps, bf16-mixed
    python scripts/gpu_check.py --steps 500 --precision 32-true --json gpu.json
    python scripts/gpu_check.py --extra --data.root /data/cifar   # anything after --extra goes to both stages
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from distill.cli import DistillCLI
from distill.stage import run_stage

RECIPES = Path(__file__).resolve().parents[1] / "teachers"


class Throughput(Callback):
    """Images per second over the steps after warm-up, and peak accelerator memory."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.images, self.start, self.end = warmup, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_step > self.warmup:
            self.images += batch[0].shape[0] * trainer.world_size
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    def report(self) -> dict[str, float | None]:
        seconds = max(self.end - self.start, 1e-9)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        return {"images_per_s": self.images / seconds, "peak_gpu_memory_gib": peak}


def run(stage: str, config: Path, run_dir: Path, steps: int, warmup: int, accelerator: str, precision: str,
        extra: list[str], more: list[str] = ()) -> dict[str, float | None]:
    cli = DistillCLI(stage, ["--config", str(config), "--run_dir", str(run_dir), "--overwrite", "true",
                             "--trainer.max_steps", str(warmup + steps), "--trainer.limit_val_batches", "2",
                             "--trainer.limit_test_batches", "2", "--trainer.accelerator", accelerator,
                             "--trainer.devices", "1", "--trainer.precision", precision,
                             "--trainer.enable_model_summary", "false", *more, *extra])
    meter = Throughput(warmup)
    cli.trainer.callbacks.append(meter)
    run_stage(cli)
    return meter.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher_config", type=Path, default=RECIPES / "cifar100" / "resnet32x4.yaml")
    parser.add_argument("--student_config", type=Path, default=RECIPES / "cifar100" / "resnet32x4-to-resnet8x4.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="bf16-mixed" if torch.cuda.is_available() else "32-true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options passed to both stages")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="distill-gpu-check-"))
    teacher = run("teacher", args.teacher_config, work / "teacher", args.steps, args.warmup, args.accelerator,
                  args.precision, args.extra)
    student = run("student", args.student_config, work / "student", args.steps, args.warmup, args.accelerator,
                  args.precision, args.extra, ["--model.teacher", str(work / "teacher" / "best.ckpt")])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"device": device, "precision": args.precision, "steps": args.steps,
              "teacher_config": str(args.teacher_config), "student_config": str(args.student_config),
              "teacher": teacher, "student": student}
    print(f"\n{device}, {args.precision}, {args.steps} steps after {args.warmup} of warm-up")
    for name, r in (("teacher", teacher), ("student (KD)", student)):
        memory = "-" if r["peak_gpu_memory_gib"] is None else f"{r['peak_gpu_memory_gib']:.2f} GiB"
        print(f"  {name:<13} {r['images_per_s']:>9.0f} images/s   peak memory {memory}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
