"""Training speed of the student stage against a hand-written PyTorch loop, measured side by side.

Times N optimizer steps (after warm-up) of
  (a) a plain PyTorch loop written here: same model, optimizer, LR schedule, batch size and in-memory data,
  (b) the student stage with alpha=0 (no teacher),
  (c) KD with the cached teacher logits,
  (d) KD with the teacher run online on every batch,
  (e) optionally (--with_compile) the stage with torch.compile,
  (f-i) optionally (--with_methods) attention transfer with the teacher online (forward hooks on both
        networks, against d), DIST with cached logits (against c), two cached teachers (against c) and
        KD online with the same hooks as AT recording features that nothing reads (the hooks' own cost, against d),
and the teacher's own forward pass per batch, repeated and interleaved; prints medians and ratios.
With --paired_steps N it also times the training steps of (c), (d), (f), (h) and (i) themselves, one step
of each in turn N times (no Trainer loop): drifts in machine speed then cancel step by step, which resolves a
few percent where whole 100-step runs swing by 20%.

    python scripts/benchmark.py [--steps 100] [--repeats 5] [--json bench.json] [--with_methods] [--paired_steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback

from distill import optim
from distill.data import ImageDataModule
from distill.losses import DISTILLERS, KD
from distill.models import create_model
from distill.cli import DistillCLI


class TappedKD(KD):
    """KD that has both networks record AT's feature maps and reads none of them: the cost of the hooks alone."""

    student_features = teacher_features = ("stage1", "stage2")


class StepTimer(Callback):
    """Wall time from the first step after warm-up to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.end = time.perf_counter()


def plain_loop(data: ImageDataModule, model_name: str, batch_size: int, steps: int, warmup: int) -> float:
    """Steps/s of the loop a user would write by hand for the same job."""
    train = data.train_set
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.info.in_channels)
    model = model.to(memory_format=torch.channels_last).train()
    # The stage's defaults, built by the same functions: AdamW with no decay on norms and biases,
    # one-cycle stepped every batch. The comparison then measures the framework, not the recipe.
    opt = optim.build_optimizer("adamw", model, lr=3e-3, weight_decay=0.05, decay_norm_and_bias=False)
    schedule = optim.build_scheduler("onecycle", opt, total_steps=warmup + steps)
    order = train.indices[torch.randperm(len(train.indices))]
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = order[(step * batch_size) % (len(order) - batch_size):][:batch_size]
        images = data.transform(train.images[idx], train=False).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(images), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return steps / (time.perf_counter() - start)


PAIRS = (("at_online", "kd_online"), ("hooks_online", "kd_online"), ("two_cached", "kd_cached"))


def paired_steps(args: dict[str, list[str]], work: Path, batch_size: int, rounds: int) -> dict[str, Any]:
    """Milliseconds per training step of each system in ``args``, one step of each in turn, and the PAIRS' ratios.

    Each system is built by the student stage's CLI and set up by one real step (which also opens a
    cached teacher's table); then its own ``training_losses``, backward and an optimizer step run on
    one fixed batch, the systems taking turns (rotating which goes first), so that they share every
    change in machine speed.
    """
    systems = {}
    for name, system_args in args.items():
        cli = DistillCLI("student", ["--run_dir", str(work / f"paired_{name}"), "--trainer.max_steps", "1",
                                     "--trainer.limit_val_batches", "0", "--trainer.enable_model_summary", "false",
                                     "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
                                     *system_args])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        module = cli.model.train()
        systems[name] = (module, torch.optim.AdamW(module.trainable_module().parameters(), lr=1e-3))
    data = cli.datamodule
    images = data.transform(data.train_set.images[:batch_size], train=False).contiguous(
        memory_format=torch.channels_last)
    labels, indices = data.train_set.labels[:batch_size], torch.arange(batch_size)  # indices: cached table rows
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for round_ in range(rounds + 5):  # the first 5 rounds are warm-up
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            module, optimizer = systems[name]
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            _, terms = module.training_losses(images, labels, indices)
            torch.stack(list(terms.values())).sum().backward()
            optimizer.step()
            if round_ >= 5:
                seconds[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {f"paired_{name}_ms": 1000 * statistics.median(values) for name, values in seconds.items()}
    for name, reference in PAIRS:
        ratios = [ref / own for ref, own in zip(seconds[reference], seconds[name])]  # speed relative to reference
        quartiles = statistics.quantiles(ratios, n=4)
        result[f"paired_{name}_vs_{reference}"] = statistics.median(ratios)
        result[f"paired_{name}_vs_{reference}_quartiles"] = [quartiles[0], quartiles[2]]
    return result


def stage(args: list[str], run_dir: Path, steps: int, warmup: int) -> float:
    """Steps/s of ``python -m distill.train student ARGS`` (its defaults: logging, progress bar)."""
    cli = DistillCLI("student", ["--run_dir", str(run_dir), "--trainer.max_steps", str(warmup + steps),
                                 "--trainer.limit_val_batches", "0", "--trainer.enable_model_summary", "false",
                                 *args])
    timer = StepTimer(warmup)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return steps / (timer.end - timer.start)


@torch.no_grad()
def teacher_forward(teacher_ckpt: Path, data: ImageDataModule, batch_size: int, repeats: int = 20) -> float:
    """Seconds per batch of the teacher's forward pass alone (eval mode, no_grad)."""
    from distill.checkpoint import model_from_checkpoint

    teacher, _ = model_from_checkpoint(teacher_ckpt)
    teacher = teacher.to(memory_format=torch.channels_last)
    images = data.transform(data.train_set.images[:batch_size], train=False).contiguous(
        memory_format=torch.channels_last)
    for _ in range(3):
        teacher(images)
    start = time.perf_counter()
    for _ in range(repeats):
        teacher(images)
    return (time.perf_counter() - start) / repeats


def make_teacher(work: Path, teacher_model: str, name: str = "teacher") -> Path:
    """An (untrained) teacher checkpoint: training speed does not depend on the teacher's weights."""
    from distill.train import main

    run_dir = work / name
    code = main(["teacher", "--model.model", teacher_model, "--run_dir", str(run_dir), "--trainer.max_steps", "1",
                 "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 "--trainer.logger", "false"])
    assert code == 0
    return run_dir / "best.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--student", default="cnn_small")
    parser.add_argument("--teacher", default="cnn_wide")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--with_methods", action="store_true",
                        help="also time (f) AT with the teacher online, (g) DIST cached, (h) two cached teachers, "
                             "(i) KD online with AT's hooks")
    parser.add_argument("--paired_steps", type=int, default=0,
                        help="also time N rounds of single training steps of (c), (d), (f), (h) and (i), "
                             "taking turns (implies --with_methods)")
    parser.add_argument("--with_compile", action="store_true",
                        help="also time (e) the stage with --model.compile true (compilation not timed)")
    args = parser.parse_args()
    args.with_methods = args.with_methods or args.paired_steps > 0

    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    teacher_ckpt = make_teacher(work, args.teacher)
    data = ImageDataModule(batch_size=args.batch_size)
    data.setup("fit")
    common = ["--model.model", args.student, "--model.teacher", str(teacher_ckpt),
              "--data.batch_size", str(args.batch_size), "--overwrite", "true"]
    variants = {
        "plain": lambda: plain_loop(data, args.student, args.batch_size, args.steps, args.warmup),
        "stage": lambda: stage([*common, "--model.method.alpha", "0"], work / "stage", args.steps, args.warmup),
        "kd_cached": lambda: stage([*common, "--model.method.alpha", "0.9"], work / "cached", args.steps, args.warmup),
        "kd_online": lambda: stage([*common, "--model.method.alpha", "0.9", "--model.teacher_cache", "false"],
                                   work / "online", args.steps, args.warmup),
    }
    if args.with_compile:
        variants["compiled"] = lambda: stage([*common, "--model.method.alpha", "0", "--model.compile", "true"],
                                             work / "compiled", args.steps, args.warmup)
    if args.with_methods:
        second = make_teacher(work, args.teacher, "teacher_b")
        alone = ["--model.model", args.student, "--data.batch_size", str(args.batch_size), "--overwrite", "true"]
        variants["at_online"] = lambda: stage([*common, "--model.method", "at", "--model.teacher_cache", "false"],
                                              work / "at", args.steps, args.warmup)
        variants["dist_cached"] = lambda: stage([*common, "--model.method", "dist"], work / "dist", args.steps,
                                                args.warmup)
        variants["two_cached"] = lambda: stage([*alone, "--model.teacher", f"[{teacher_ckpt}, {second}]"],
                                               work / "two", args.steps, args.warmup)
        DISTILLERS.register(TappedKD, name="tapped_kd")
        variants["hooks_online"] = lambda: stage([*common, "--model.method", "tapped_kd", "--model.teacher_cache",
                                                  "false"], work / "hooks", args.steps, args.warmup)
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):  # interleaved, so drifts in machine speed hit every variant alike
        for name, run in variants.items():
            runs[name].append(run())
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in runs.items()),
              flush=True)
    median = {name: statistics.median(values) for name, values in runs.items()}
    teacher_s = teacher_forward(teacher_ckpt, data, args.batch_size)
    expected_online = 1 / (1 / median["kd_cached"] + teacher_s)
    result = {
        "plain_steps_per_s": median["plain"],
        "stage_steps_per_s": median["stage"],
        "kd_cached_steps_per_s": median["kd_cached"],
        "kd_online_steps_per_s": median["kd_online"],
        "stage_vs_plain": median["stage"] / median["plain"],
        "kd_cached_vs_stage": median["kd_cached"] / median["stage"],
        "kd_online_vs_stage": median["kd_online"] / median["stage"],
        "teacher_forward_s_per_step": teacher_s,
        "kd_online_expected_steps_per_s": expected_online,
        "kd_online_vs_expected": median["kd_online"] / expected_online,
        "runs": runs,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "batch_size": args.batch_size,
        "student": args.student, "teacher": args.teacher, "threads": torch.get_num_threads(),
    }
    print(f"\nmedian steps/s over {args.repeats} interleaved repeats of {args.steps} steps, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, student {args.student}, teacher {args.teacher}")
    print("| run | steps/s | ratio |\n|---|---|---|")
    print(f"| (a) plain PyTorch loop | {median['plain']:.1f} | 1.00 |")
    print(f"| (b) student stage, alpha=0 | {median['stage']:.1f} | {result['stage_vs_plain']:.2f} x (a) |")
    print(f"| (c) KD, cached teacher logits | {median['kd_cached']:.1f} | {result['kd_cached_vs_stage']:.2f} x (b) |")
    print(f"| (d) KD, teacher online | {median['kd_online']:.1f} | {result['kd_online_vs_stage']:.2f} x (b) |")
    print(f"teacher forward alone: {1000 * teacher_s:.1f} ms/step; (c) plus that predicts "
          f"{expected_online:.1f} steps/s for (d), measured {result['kd_online_vs_expected']:.2f} x of it")
    if args.with_compile:
        result["compiled_steps_per_s"] = median["compiled"]
        result["compiled_vs_stage"] = median["compiled"] / median["stage"]
        print(f"| (e) student stage, alpha=0, torch.compile | {median['compiled']:.1f} | "
              f"{result['compiled_vs_stage']:.2f} x (b) |")
    if args.with_methods:
        result.update(at_online_vs_kd_online=median["at_online"] / median["kd_online"],
                      dist_cached_vs_kd_cached=median["dist_cached"] / median["kd_cached"],
                      two_cached_vs_kd_cached=median["two_cached"] / median["kd_cached"],
                      hooks_online_vs_kd_online=median["hooks_online"] / median["kd_online"])
        print(f"| (f) AT, teacher online, hooks on both networks | {median['at_online']:.1f} | "
              f"{result['at_online_vs_kd_online']:.2f} x (d) |")
        print(f"| (g) DIST, cached teacher logits | {median['dist_cached']:.1f} | "
              f"{result['dist_cached_vs_kd_cached']:.2f} x (c) |")
        print(f"| (h) KD, two cached teachers | {median['two_cached']:.1f} | {result['two_cached_vs_kd_cached']:.2f} x (c) |")
        print(f"| (i) KD, teacher online, AT's hooks on both networks, unread | {median['hooks_online']:.1f} | "
              f"{result['hooks_online_vs_kd_online']:.2f} x (d) |")
    if args.paired_steps:
        online = ["--model.teacher_cache", "false"]
        paired_args = {"kd_online": [*common, "--model.method", "kd", *online],
                       "at_online": [*common, "--model.method", "at", *online],
                       "hooks_online": [*common, "--model.method", "tapped_kd", *online],
                       "kd_cached": [*common, "--model.method", "kd"],
                       "two_cached": [*alone, "--model.method", "kd", "--model.teacher", f"[{teacher_ckpt}, {second}]"]}
        paired = paired_steps(paired_args, work, args.batch_size, args.paired_steps)
        result.update(paired)
        print(f"\none training step of each in turn, {args.paired_steps} rounds, batch {args.batch_size}: median ms, "
              "and the speed against the reference as the median (quartiles) of the per-round ratios")
        print("| step | ms | reference | speed vs reference |\n|---|---:|---|---|")
        for name, reference in PAIRS:
            low, high = paired[f"paired_{name}_vs_{reference}_quartiles"]
            print(f"| {name} | {paired[f'paired_{name}_ms']:.1f} | {reference} {paired[f'paired_{reference}_ms']:.1f} | "
                  f"{paired[f'paired_{name}_vs_{reference}']:.3f} ({low:.3f}-{high:.3f}) |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
