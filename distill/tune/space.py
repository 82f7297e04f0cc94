"""A search space file: the base recipe, fixed overrides, the distributions searched and the grid."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import UsageError

TYPES = ("float", "int", "categorical")


@dataclass
class Space:
    """What a search varies and what it keeps.

    Attributes:
        base_config: A stage config (``--config``) the trials start from; None: the stage's default recipe.
        fixed: Overrides every trial gets, by dotted CLI key (``trainer.max_epochs: 3``).
        space: Distributions by dotted CLI key: ``{type: float, low, high, log}``, ``{type: int, low,
            high, step, log}`` or ``{type: categorical, choices: [...]}``.
        grid: Values per dotted key for the grid sampler.
    """

    base_config: Path | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def digest(self) -> str:
        """Identifies the space (a resumed study must search the same one)."""
        text = json.dumps({"base": str(self.base_config), "fixed": self.fixed, "space": self.space, "grid": self.grid},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def keys(self, grid: bool) -> list[str]:
        return list(self.grid if grid else self.space)


def read_space(path: Path) -> Space:
    """Reads and checks a space file.

    Raises:
        UsageError: a missing or unreadable file, an empty space, a distribution that is not one.
    """
    if not path.is_file():
        raise UsageError(f"space file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise UsageError(f"space file {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start}): a YAML file is expected") from None
    except yaml.YAMLError as err:
        raise UsageError(f"space file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"space file {path} holds a {type(raw).__name__}, not sections (base_config, fixed, space, grid)")
    unknown = set(raw) - {"base_config", "fixed", "space", "grid"}
    if unknown:
        raise UsageError(f"space file {path}: unknown sections {sorted(unknown)}; valid: base_config, fixed, space, grid")
    base = raw.get("base_config")
    base_path = None
    if base:
        base_path = (path.parent / base) if not Path(base).is_absolute() and (path.parent / base).is_file() else Path(base)
        if not base_path.is_file():
            raise UsageError(f"space file {path}: base_config {base} not found")
    space = raw.get("space") or {}
    grid = raw.get("grid") or {}
    if not space and not grid:
        raise UsageError(f"space file {path}: the space is empty (give `space:` distributions or a `grid:`)")
    for key, spec in space.items():
        check_distribution(key, spec)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"grid {key}: give a non-empty list of values")
    return Space(base_path, dict(raw.get("fixed") or {}), dict(space), dict(grid))


def check_distribution(key: str, spec: Any) -> None:
    """Raises UsageError unless ``spec`` is a distribution Optuna can sample."""
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise UsageError(f"space {key}: give {{type: float|int|categorical, ...}}, got {spec!r}")
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise UsageError(f"space {key}: a categorical needs a non-empty list of choices")
        return
    extra = set(spec) - {"type", "low", "high", "log", "step"}
    if extra or "low" not in spec or "high" not in spec:
        raise UsageError(f"space {key}: a {spec['type']} needs low and high (and optionally log, step), got {spec}")
    low, high = spec["low"], spec["high"]
    if not isinstance(low, int | float) or not isinstance(high, int | float) or not low < high:
        raise UsageError(f"space {key}: low must be below high, got {low} and {high}")
    if spec.get("log") and low <= 0:
        raise UsageError(f"space {key}: a log scale needs low > 0, got {low}")
    if spec["type"] == "int" and (not isinstance(low, int) or not isinstance(high, int)):
        raise UsageError(f"space {key}: an int range needs integer bounds, got {low} and {high}")


def suggest(trial: Any, space: Space, grid: bool) -> dict[str, Any]:
    """The trial's value for every key (grid: from ``grid``; else sampled from ``space``)."""
    if grid:
        return {key: trial.suggest_categorical(key, values) for key, values in space.grid.items()}
    params: dict[str, Any] = {}
    for key, spec in space.space.items():
        if spec["type"] == "float":
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                              step=spec.get("step"))
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1),
                                            log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_categorical(key, spec["choices"])
    return params


def flags(values: dict[str, Any]) -> list[str]:
    """``{"model.lr": 0.01}`` -> ``["--model.lr", "0.01"]`` (values as the CLI parses them: YAML)."""
    out: list[str] = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out += [f"--{key}", text]
    return out


def probes(space: Space, grid: bool) -> list[dict[str, Any]]:
    """Parameter sets that together give every searched key each of its values: every choice (or grid
    value) and both ends of every range, so that each is checked by the stage's parser before any trial."""
    if grid:
        values = {key: list(choices) for key, choices in space.grid.items()}
    else:
        values = {key: list(spec["choices"]) if spec["type"] == "categorical" else [spec["low"], spec["high"]]
                  for key, spec in space.space.items()}
    count = max((len(v) for v in values.values()), default=1)
    return [{key: choices[min(i, len(choices) - 1)] for key, choices in values.items()} for i in range(count)]
