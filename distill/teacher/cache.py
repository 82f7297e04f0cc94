"""The teacher's logits computed once per training sample, kept on disk, looked up by index.

Valid only when the student sees each sample as the teacher did (no random augmentation the
teacher's output varies with): ``TeacherCache`` decides that at the start of fit, builds or reuses
the table and hands it to the distillation system, which then never runs the teacher in training.

The table is a ``.npy`` file keyed by the teacher (a checkpoint's bytes; else its spec, adapters
and weights), the data's fingerprint, the
teacher's view set and the storage type, so a changed teacher or changed data builds a new one.
At ImageNet size one teacher's table is 1.28M x 1000 x 4 bytes = 5.1 GB: it is built in chunks
(progress shown), can be stored as float16, and above ``memory_limit_mb`` it is memory-mapped
from disk instead of loaded into each process's memory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from distill.data.interface import DistillData
from distill.errors import UsageError
from distill.run_dir import atomic_write
from distill.teacher.teacher import Teacher

CACHE_DIR = "teacher_logits"
DTYPES = {"float32": np.float32, "float16": np.float16}


def cache_path(directory: str | Path, teacher_identity: str, key: str) -> Path:
    """``<directory>/teacher_logits/<hash>.npy``, the hash covering the teacher's identity and ``key``."""
    name = hashlib.sha256(f"{teacher_identity}|{key}".encode()).hexdigest()[:24]
    return Path(directory) / CACHE_DIR / f"{name}.npy"


class LogitTable:
    """A (N, K) table of logits read by sample index, in memory or memory-mapped.

    Args:
        array: (N, K) float16/float32 array (a ``np.memmap`` reads rows from disk on demand).
        device: Where a table held in memory lives (rows of a memory-mapped one are copied there per lookup).
    """

    def __init__(self, array: np.ndarray, device: torch.device | str = "cpu", in_memory: bool = True) -> None:
        self.shape = tuple(array.shape)
        self.in_memory = in_memory
        self._array = array
        self._tensor = torch.from_numpy(np.array(array)).to(device) if in_memory else None  # read whole

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices: Tensor) -> Tensor:
        """Rows ``indices`` (B,) as float32 logits (B, K) on ``indices``' device."""
        if self._tensor is not None:
            return self._tensor[indices.to(self._tensor.device)].float().to(indices.device)
        rows = np.asarray(self._array[indices.cpu().numpy()])  # fancy indexing reads only these rows
        return torch.from_numpy(rows).float().to(indices.device)


@torch.no_grad()
def build_table(teacher: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]], num_samples: int,
                path: Path, dtype: str = "float32", device: torch.device | str = "cpu") -> None:
    """Runs ``teacher`` over ``(inputs, indices)`` batches in order and writes the (num_samples, K) table to ``path``.

    Rows are streamed to the file chunk by chunk (the table never sits whole in memory), with
    progress shown, through ``atomic_write``: a crash leaves no partial table under the final name.
    """
    def write(f: BinaryIO) -> None:
        done, next_report, start = 0, 0.1, time.perf_counter()
        for inputs, indices in batches:
            if not torch.equal(indices.cpu(), torch.arange(done, done + len(indices))):
                raise UsageError(f"training inputs must come in index order from 0; got {indices[:3].tolist()}... "
                                 f"after {done} samples")
            logits = teacher(inputs.to(device)).float().cpu().numpy().astype(DTYPES[dtype])  # (B, K)
            if done == 0:
                header = {"descr": np.lib.format.dtype_to_descr(logits.dtype), "fortran_order": False,
                          "shape": (num_samples, logits.shape[1])}
                np.lib.format.write_array_header_1_0(f, header)
            f.write(np.ascontiguousarray(logits).tobytes())
            done += len(indices)
            if next_report * num_samples <= done < num_samples:
                rank_zero_info(f"teacher cache: {done:,}/{num_samples:,} samples "
                               f"({done / (time.perf_counter() - start):.0f}/s)")
                next_report += 0.1
        if done != num_samples:
            raise UsageError(f"the training split yielded {done} samples for a table of {num_samples}")

    atomic_write(path, write)


def open_table(path: Path, memory_limit_mb: float, device: torch.device | str = "cpu") -> LogitTable | None:
    """The table at ``path`` (in memory up to ``memory_limit_mb``, memory-mapped above), or None if unreadable."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # truncated or corrupt: rebuilt by the caller
    if array.ndim != 2:
        return None
    in_memory = array.nbytes <= memory_limit_mb * 2**20
    return LogitTable(array, device=device if in_memory else "cpu", in_memory=in_memory)


@dataclass(frozen=True)
class TableRequest:
    """What a distillation system asks the cache to keep: the teacher, and what one row of it holds.

    Attributes:
        teacher: The frozen teacher (its identity, views and home key the table).
        columns: What a row holds: ``logits``, or ``logits+NAME:D`` with pooled features beside them.
        rows: Model-ready inputs (B, ...) -> rows (B, columns' width), computed without autograd.
        needed: False when the method ignores the teacher (alpha=0): nothing is run or cached.
        unfit: The method's reason its teacher outputs cannot be cached, or None.
    """

    teacher: Teacher
    columns: str
    rows: Callable[[Tensor], Tensor]
    needed: bool = True
    unfit: str | None = None


class TeacherCache(Callback):
    """At the start of fit, gives a distillation system cached teacher logits where they are valid.

    The system says what to keep (``table_request()``, a ``TableRequest``) and takes the table in
    ``cached_logits``; nothing else of it is read. The cache serves when the method reads only the
    teacher's logits (or, beside them, features that are one vector per sample, such as CRD's
    pooled ``penultimate``: cached in the same row) and every random transform of the training
    inputs is one the teacher is invariant to (none, or flips for a teacher averaged over mirrored
    views). Otherwise the teacher runs online, and the reason is printed. Rank 0 builds the table;
    every process then opens the same file.

    Args:
        dtype: Storage type of the table: ``float32`` (exact) or ``float16`` (half the disk and memory).
        memory_limit_mb: Tables up to this size are read into memory (on the training device);
            larger ones are memory-mapped and read row by row.
        enabled: False runs the teacher online whatever the data (said once at the start).
    """

    def __init__(self, dtype: Literal["float32", "float16"] = "float32", memory_limit_mb: float = 1024.0,
                 enabled: bool = True) -> None:
        if dtype not in DTYPES:
            raise UsageError(f"teacher cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.enabled = enabled
        self.memory_limit_mb = memory_limit_mb
        self.path: Path | None = None

    def reason_not_cached(self, request: TableRequest, data: Any) -> str | None:
        """Why the teacher's outputs are not cached for this run, or None when they are."""
        if not self.enabled:
            return "teacher_cache is off"
        if request.unfit is not None:
            return request.unfit
        if data is None or not isinstance(data, DistillData):
            return "the DataModule does not answer distill.data.DistillData (its batches carry no sample indices)"
        varying = data.random_transforms() - request.teacher.invariances()
        if varying:
            return f"inputs are randomly augmented ({', '.join(sorted(varying))}) and the teacher's output varies with it"
        return None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module: Any = pl_module
        module.cached_logits = None
        request: TableRequest = module.table_request()
        if not request.needed:
            rank_zero_info("teacher: not run (the method ignores it, e.g. alpha=0)")
            return
        data = trainer.datamodule
        why = self.reason_not_cached(request, data)
        if why is not None:
            rank_zero_info(f"teacher: online, run under no_grad on every training batch ({why})")
            return
        key = f"{data.fingerprint()}|views={request.teacher.views()}|dtype={self.dtype}"
        if request.columns != "logits":  # unchanged for logits alone: existing caches stay valid
            key += f"|columns={request.columns}"
        path = cache_path(request.teacher.cache_dir(trainer.default_root_dir), request.teacher.identity(), key)
        start = time.perf_counter()
        # Built once, by one process; every process then reads the same file.
        verb = "loaded"
        if trainer.is_global_zero and open_table(path, 0) is None:
            build_table(request.rows, data.training_inputs(), data.num_training_samples(), path, self.dtype,
                        pl_module.device)
            verb = "computed"
        trainer.strategy.barrier("teacher_cache")
        table = open_table(path, self.memory_limit_mb, pl_module.device)
        if table is None or len(table) != data.num_training_samples():
            raise UsageError(f"teacher logits cache {path} is unreadable; delete it and run again")
        module.cached_logits = table
        where = "in memory" if table.in_memory else "memory-mapped"
        what = "logits" if request.columns == "logits" else request.columns.replace("+", " and ")
        rank_zero_info(f"teacher: cached {what} {verb} in {time.perf_counter() - start:.1f} s ({path}, {self.dtype}, "
                       f"{where}); looked up by index, the teacher does not run during training")
