"""Gradient-boosted trees (LightGBM, XGBoost) as a table teacher: fitted on the rows at once, run as ONNX.

``python -m distill.train teacher --data tabular ... --model.model lightgbm`` (or ``xgboost``) fits
the trees on the training rows the student will see, preprocessed the same way, stopping early on
the validation rows. The module keeps two byte buffers, so a checkpoint holds tensors only
(``weights_only=True``) and carries everything needed to use it: the library's own model (LightGBM
text, XGBoost JSON; never a pickle) and its ONNX export, which ``forward`` runs with onnxruntime.
The export is checked against the library's own predictions on the validation rows before it is kept.

Classification outputs are log-probabilities (softmax gives the trees' probabilities back, so the
distillation losses read them as logits); regression outputs are the z-scored target the trees were
fitted on (the task's ``TargetScale`` puts them back in the target's units, as for a network).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import UsageError
from distill.models._registry import register_model

LIBRARIES = {"lightgbm": "lightgbm", "xgboost": "xgboost"}  # model name -> the package that fits it
ONNX_OPSET = 15
AGREEMENT_TOLERANCE = 1e-4  # largest difference of a probability (or z-scored value) between ONNX and the library


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ModuleNotFoundError:
        raise UsageError(f"model {package} needs the {package} package: pip install -e \".[trees]\"") from None


class GradientBoostedTrees(nn.Module):
    """A gradient-boosted tree ensemble: rows (B, F) -> (B, K) log-probabilities, or (B, 1) z-scored values.

    Args:
        library: ``lightgbm`` or ``xgboost``.
        num_outputs: Classes (1: a regression target).
        in_features: Width of the rows.
        settings: The library's own settings (``n_estimators``, ``learning_rate``, ...).
        early_stopping_rounds: Stop adding trees when the validation loss has not improved for this many.
    """

    def __init__(self, library: str, num_outputs: int, in_features: int, settings: dict[str, Any],
                 early_stopping_rounds: int) -> None:
        super().__init__()
        if early_stopping_rounds < 1:
            raise UsageError(f"early_stopping_rounds must be >= 1, got {early_stopping_rounds}")
        if int(settings.get("n_estimators", 1)) < 1:
            raise UsageError(f"n_estimators must be >= 1, got {settings['n_estimators']}")
        self.library, self.num_outputs, self.in_features = library, num_outputs, in_features
        self.settings, self.early_stopping_rounds = dict(settings), early_stopping_rounds
        # The fitted model, as bytes: the library's own format and the ONNX graph forward runs.
        self.register_buffer("native_model", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("onnx_model", torch.zeros(0, dtype=torch.uint8))
        self._session: Any = None
        self._session_of: int | None = None  # data pointer of the ONNX bytes the session was built from

    @property
    def fitted(self) -> bool:
        return self.onnx_model.numel() > 0

    @property
    def stored_values(self) -> int:
        """Numbers the ensemble holds outside parameters: one per split threshold and leaf value."""
        from distill.runtime import graph_values

        return graph_values(self.onnx_bytes()) if self.fitted else 0

    def onnx_bytes(self) -> bytes:
        """The ONNX graph: input ``input`` (B, F) float, last output the probabilities or the value."""
        return self.onnx_model.numpy().tobytes()

    def native_bytes(self) -> bytes:
        """The library's own model file: LightGBM text or XGBoost JSON."""
        return self.native_model.numpy().tobytes()

    def native_predictor(self, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """The library's own prediction on rows (N, F) float32: probabilities (N, K) or z-scored values (N,)."""
        return _PREDICTORS[self.library](self.native_bytes(), self.num_outputs, threads or torch.get_num_threads())

    def deployable_onnx(self, mean: float = 0.0, std: float = 1.0) -> bytes:
        """The ONNX graph as a deployed network's: input ``input`` (B, F), one output ``logits`` — log-probabilities
        (B, K), or the value (B, 1) in the target's units (``value * std + mean``) — as ``forward`` computes."""
        onnx = _require("onnx")
        from onnx import helper, numpy_helper

        from distill.runtime import INPUT, OUTPUT

        graph = onnx.load_from_string(self.onnx_bytes())
        scores = graph.graph.output[-1].name
        del graph.graph.output[:]
        if self.num_outputs > 1:  # log(max(p, 1e-8)), as forward
            constants = [numpy_helper.from_array(np.array(1e-8, dtype=np.float32), "floor")]
            nodes = [helper.make_node("Max", [scores, "floor"], ["floored"]), helper.make_node("Log", ["floored"], [OUTPUT])]
            width = self.num_outputs
        else:
            constants = [numpy_helper.from_array(np.array(std, dtype=np.float32), "target_std"),
                         numpy_helper.from_array(np.array(mean, dtype=np.float32), "target_mean")]
            nodes = [helper.make_node("Mul", [scores, "target_std"], ["scaled"]),
                     helper.make_node("Add", ["scaled", "target_mean"], [OUTPUT])]
            width = 1
        if not any(o.domain in ("", "ai.onnx") for o in graph.opset_import):  # a regressor's graph may use ai.onnx.ml only
            graph.opset_import.append(helper.make_opsetid("", ONNX_OPSET))
        graph.graph.initializer.extend(constants)
        graph.graph.node.extend(nodes)
        graph.graph.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [None, width]))
        assert graph.graph.input[0].name == INPUT
        onnx.checker.check_model(graph)
        return graph.SerializeToString()

    # -- fitting -------------------------------------------------------------------------------------------------------
    def fit(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], seed: int,
            threads: int, classes: Sequence[str] = ()) -> dict[str, Any]:
        """Fits on ``train`` rows (N, F) float32 and targets (N,) (class codes, or z-scored values), stopping on ``val``.

        ``classes`` names the class codes in messages.

        Returns:
            What the fit found: boosting rounds and trees kept (a round grows one tree per class when
            there are more than two), the largest difference of the ONNX graph from the library.

        Raises:
            UsageError: a missing library, or an ONNX export that disagrees with the library's own predictions.
        """
        fit = _FITTERS[self.library]
        if self.num_outputs > 1:  # the library numbers the classes it sees: each must have training rows
            missing = sorted(set(range(self.num_outputs)) - set(np.unique(train[1]).tolist()))
            if missing:
                name = f"class {classes[missing[0]]!r}" if len(classes) == self.num_outputs else f"class {missing[0]}"
                raise UsageError(f"{self.library} needs training rows of every class; {name} (of "
                                 f"{self.num_outputs}) has none: more rows, or another --data.split_seed")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the libraries' deprecation chatter about their own arguments
            try:
                native, onnx, rounds = fit(self, train, val, seed, threads)
            except (ValueError, TypeError, *_library_errors(self.library)) as err:  # settings or rows it refuses
                if isinstance(err, UsageError):
                    raise
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UsageError(f"{self.library} could not fit these rows with these settings: {first[:200]}") from None
        self.native_model = torch.frombuffer(bytearray(native), dtype=torch.uint8)
        self.onnx_model = torch.frombuffer(bytearray(onnx), dtype=torch.uint8)
        self._session = None
        difference = self.export_difference(val[0])
        if difference > AGREEMENT_TOLERANCE:
            raise UsageError(f"the ONNX export of the {self.library} model differs from {self.library}'s own "
                             f"predictions by up to {difference:.2g} on the validation rows; not kept. ONNX compares "
                             "split thresholds in float32: a column needing more than its 7 digits (an ID, a saved "
                             "index, a timestamp) is the usual cause; leave it out with --data.drop")
        answers = self._run(train[0].astype(np.float32))  # (N, K) or (N,)
        if len(answers) and float(np.ptp(answers, axis=0).max()) == 0.0:
            setting = "min_child_samples" if self.library == "lightgbm" else "min_child_weight"
            warnings.warn(f"{self.library} found no split worth making in these {len(train[0])} training rows: it "
                          f"answers the same for every row; give it more rows or a lower {setting} "
                          f"(--model.model_kwargs '{{{setting}: ...}}')", UserWarning, stacklevel=2)
        trees = rounds * (self.num_outputs if self.num_outputs > 2 else 1)
        return {"boosting_rounds": rounds, "trees": trees, "onnx_max_difference": float(difference)}

    def export_difference(self, rows: np.ndarray) -> float:
        """Largest absolute difference between the ONNX graph's and the library's outputs on ``rows``."""
        ours = self._run(rows.astype(np.float32))
        theirs = np.asarray(self.native_predictor()(rows.astype(np.float32)), dtype=np.float64)
        return float(np.abs(ours.reshape(len(rows), -1) - theirs.reshape(len(rows), -1)).max()) if len(rows) else 0.0

    # -- inference -----------------------------------------------------------------------------------------------------
    def _run(self, rows: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise UsageError(f"this {self.library} model is not fitted: train it with python -m distill.train teacher "
                             f"--model.model {self.library}")
        pointer = self.onnx_model.data_ptr()
        if self._session is None or self._session_of != pointer:
            ort = _require("onnxruntime")
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(self.onnx_bytes(), options, providers=["CPUExecutionProvider"])
            self._session_of = pointer
        output = self._session.get_outputs()[-1].name  # probabilities, or the regression value
        return np.asarray(self._session.run([output], {"input": rows})[0], dtype=np.float32)

    @torch.no_grad()
    def forward(self, inputs: Tensor) -> Tensor:
        rows = inputs.detach().flatten(1).cpu().float().contiguous().numpy()
        if rows.shape[1] != self.in_features:
            raise UsageError(f"this {self.library} model reads rows of {self.in_features} features, got {rows.shape[1]}")
        scores = torch.from_numpy(self._run(rows).reshape(len(rows), -1)).to(inputs.device)  # (B, K) or (B, 1)
        return torch.log(scores.clamp_min(1e-8)) if self.num_outputs > 1 else scores

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The saved model's byte length is its own: take the buffers at the saved sizes before loading.
        for name in ("native_model", "onnx_model"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.zeros_like(saved))
        self._session = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# -- LightGBM ------------------------------------------------------------------------------------------------------------
def _fit_lightgbm(model: GradientBoostedTrees, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                  seed: int, threads: int) -> tuple[bytes, bytes, int]:
    lgb = _require("lightgbm")
    onnxmltools = _require("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    estimator = (lgb.LGBMClassifier if model.num_outputs > 1 else lgb.LGBMRegressor)(
        **model.settings, random_state=seed, n_jobs=threads, deterministic=True, force_row_wise=True, verbose=-1)
    estimator.fit(*train, eval_set=[val], callbacks=[lgb.early_stopping(model.early_stopping_rounds, verbose=False)])
    trees = int(estimator.best_iteration_ or estimator.n_estimators)
    text = estimator.booster_.model_to_string(num_iteration=trees)  # the trees up to the best validation loss
    booster = lgb.Booster(model_str=text)
    graph = onnxmltools.convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, model.in_features]))],
                                         zipmap=False, target_opset=ONNX_OPSET)
    return text.encode(), graph.SerializeToString(), trees


def _predict_lightgbm(native: bytes, num_outputs: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    lgb = _require("lightgbm")
    booster = lgb.Booster(model_str=native.decode())

    def predict(rows: np.ndarray) -> np.ndarray:
        out = booster.predict(rows, num_threads=threads)
        return np.stack([1 - out, out], axis=1) if num_outputs == 2 and out.ndim == 1 else out

    return predict


# -- XGBoost -------------------------------------------------------------------------------------------------------------
def _fit_xgboost(model: GradientBoostedTrees, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 seed: int, threads: int) -> tuple[bytes, bytes, int]:
    xgb = _require("xgboost")
    onnxmltools = _require("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    estimator = (xgb.XGBClassifier if model.num_outputs > 1 else xgb.XGBRegressor)(
        **model.settings, random_state=seed, n_jobs=threads, tree_method="hist",
        early_stopping_rounds=model.early_stopping_rounds)
    estimator.fit(*train, eval_set=[val], verbose=False)
    trees = int(estimator.best_iteration) + 1
    booster = estimator.get_booster()[:trees]  # the trees up to the best validation loss
    graph = onnxmltools.convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, model.in_features]))],
                                        target_opset=ONNX_OPSET)
    return bytes(booster.save_raw("json")), graph.SerializeToString(), trees


def _predict_xgboost(native: bytes, num_outputs: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    xgb = _require("xgboost")
    booster = xgb.Booster()
    booster.load_model(bytearray(native))
    booster.set_param({"nthread": threads})

    def predict(rows: np.ndarray) -> np.ndarray:
        out = booster.inplace_predict(rows)
        return np.stack([1 - out, out], axis=1) if num_outputs == 2 and out.ndim == 1 else out

    return predict


def fitted_trees_in(model: nn.Module) -> GradientBoostedTrees | None:
    """The tree ensemble a model is (or wraps: a regression network sits in its ``TargetScale``), else None."""
    network = getattr(model, "network", model)
    return network if isinstance(network, GradientBoostedTrees) else None


def _library_errors(library: str) -> tuple[type[Exception], ...]:
    """The error types a library raises for settings or rows it cannot fit (LightGBM's are not ValueErrors)."""
    if library == "lightgbm":
        return (_require("lightgbm").basic.LightGBMError,)
    return ()  # XGBoost's XGBoostError is a ValueError


_FITTERS = {"lightgbm": _fit_lightgbm, "xgboost": _fit_xgboost}
_PREDICTORS = {"lightgbm": _predict_lightgbm, "xgboost": _predict_xgboost}


@register_model
def lightgbm(num_classes: int = 2, in_channels: int = 16, n_estimators: int = 2000, learning_rate: float = 0.05,
             num_leaves: int = 31, max_depth: int = -1, min_child_samples: int = 20, subsample: float = 1.0,
             colsample_bytree: float = 1.0, reg_lambda: float = 0.0, early_stopping_rounds: int = 100) -> nn.Module:
    """A LightGBM table teacher (fitted, not trained by gradient steps; ``in_channels``: the row's width)."""
    settings = dict(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves, max_depth=max_depth,
                    min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1 if subsample < 1 else 0,
                    colsample_bytree=colsample_bytree, reg_lambda=reg_lambda)
    return GradientBoostedTrees("lightgbm", num_classes, in_channels, settings, early_stopping_rounds)


@register_model
def xgboost(num_classes: int = 2, in_channels: int = 16, n_estimators: int = 2000, learning_rate: float = 0.05,
            max_depth: int = 6, min_child_weight: float = 1.0, subsample: float = 1.0, colsample_bytree: float = 1.0,
            reg_lambda: float = 1.0, early_stopping_rounds: int = 100) -> nn.Module:
    """An XGBoost table teacher (fitted, not trained by gradient steps; ``in_channels``: the row's width)."""
    settings = dict(n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
                    min_child_weight=min_child_weight, subsample=subsample, colsample_bytree=colsample_bytree,
                    reg_lambda=reg_lambda)
    return GradientBoostedTrees("xgboost", num_classes, in_channels, settings, early_stopping_rounds)
