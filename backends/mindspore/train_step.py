"""One optimizer step in MindSpore graph mode: loss, gradients, clipping, loss scaling, AdamW, EMA.

What to draw and what to aim at comes from diffusion_core.training (the framework-neutral half);
this file is the MindSpore half. Two compiled graphs per step:

    gradients(batch)   loss and d loss / d weights of one micro-batch (Ho et al. 2020, Alg. 1)
    update(grads)      global-norm clipping, AdamW (Loshchilov & Hutter 2019), EMA of the weights

The update is one graph over every parameter through ops.HyperMap. Two MindSpore 2.10 facts shape
it: a Python loop over ~160 parameters inside a jit function takes ~100 s to compile (HyperMap:
~1 s), and mindspore.experimental.optim.AdamW cannot be called inside another jit function (its
own @jit `implementation` then fails with "The parameters number of the function is 9, but the
number of provided arguments is 1"), so AdamW is written here, with torch.optim.AdamW's formula.

Mixed precision: `precision` is float32 (default), bfloat16 (no loss scaling needed) or float16
(dynamic loss scaling: the loss is multiplied by a large scale so small gradients survive
float16, the gradients divided back, and a step with Inf/NaN gradients is skipped while the scale
halves). MindSpore 2.10 on CPU has no bfloat16 kernels for Conv2D, BatchMatMul, Softmax, Sigmoid,
GroupNorm or Sin, so bfloat16 is refused there; float16 runs on CPU (slowly: it is emulated).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import amp, nn, ops

from diffusion_core import training
from diffusion_core.config import ConfigError
from diffusion_core.train_config import TrainConfig

from .blocks import GroupNorm
from .model import assign_parameter
from .names import mindspore_to_canonical
from .unet import Unet

PRECISIONS = ("float32", "bfloat16", "float16")
BF16_CPU_MISSING = "Conv2D, BatchMatMul, Softmax, Sigmoid, GroupNorm and Sin"


def ema_decay_at(n: int, decay: float, warmup: int) -> float:
    """The PyTorch trainer's rule (backends/pytorch/ema.py): decay_n = min(decay, (1 + n) / (10 + n))
    for the first `warmup` updates (n from 0), then `decay`."""
    if n < warmup:
        return min(decay, (1.0 + n) / (10.0 + n))
    return decay


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then constant (as the PyTorch trainer)."""
    if config.warmup_steps:
        return config.lr * min(1.0, (step + 1) / config.warmup_steps)
    return config.lr


_hyper_map = ops.HyperMap()
_scale = ops.MultitypeFuncGraph("scale")
_square_sum = ops.MultitypeFuncGraph("square_sum")
_adamw = ops.MultitypeFuncGraph("adamw")
_lerp = ops.MultitypeFuncGraph("lerp")
_add = ops.MultitypeFuncGraph("add")


@_scale.register("Tensor", "Tensor")
def _scale_one(factor, g):
    return g * factor


@_square_sum.register("Tensor")
def _square_sum_one(g):
    return (g * g).sum()


@_add.register("Tensor", "Tensor")
def _add_one(a, b):
    return a + b


@_adamw.register("Tensor", "Tensor", "Tensor", "Number", "Number", "Number",
                 "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_one(decay_factor, step_size, bias2_sqrt, beta1, beta2, eps, param, grad, m, v):
    """torch.optim.AdamW: p *= 1 - lr wd; m, v moving moments of g, g^2;
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)."""
    ops.assign(m, m * beta1 + grad * (1.0 - beta1))
    ops.assign(v, v * beta2 + grad * grad * (1.0 - beta2))
    denom = ops.sqrt(v) / bias2_sqrt + eps
    return ops.assign(param, param * decay_factor - step_size * m / denom)


@_lerp.register("Tensor", "Tensor", "Tensor")
def _lerp_one(weight, ema, param):
    return ops.assign(ema, ema + weight * (param - ema))  # ema <- decay ema + (1 - decay) param


def _add_gradients(a, b):
    return _hyper_map(_add, a, b)


class WeightUpdate(nn.Cell):
    """Clip the gradients' global norm, take an AdamW step, update the EMA: one graph.

    Holds the optimizer state (exp_avg, exp_avg_sq: Adam's m and v) and the EMA as Parameters named
    "<kind>.<MindSpore name>": a graph may not hold two parameters of the same name.
    """

    def __init__(self, params: list, config: TrainConfig):
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.exp_avg = self.params.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="exp_avg_sq", init="zeros")
        self.ema = self.params.clone(prefix="ema", init="same")
        self.beta1, self.beta2 = (float(b) for b in config.adam_betas)
        self.eps, self.grad_clip = 1e-8, float(config.grad_clip)

    def construct(self, grads, grad_factor, decay_factor, step_size, bias2_sqrt, ema_weight):
        grads = _hyper_map(ops.partial(_scale, grad_factor), grads)
        norm = ops.sqrt(ops.addn(_hyper_map(_square_sum, grads)))
        if self.grad_clip > 0:
            # clip_grad_norm_'s factor: max_norm / (norm + 1e-6), never above 1
            clip = ops.minimum(self.grad_clip / (norm + 1e-6), 1.0)
            grads = _hyper_map(ops.partial(_scale, clip), grads)
        _hyper_map(ops.partial(_adamw, decay_factor, step_size, bias2_sqrt, self.beta1, self.beta2,
                               self.eps), self.params, grads, self.exp_avg, self.exp_avg_sq)
        # MindSpore orders side effects on a Parameter as written: the EMA reads updated weights.
        _hyper_map(ops.partial(_lerp, ema_weight), self.ema, self.params)
        return norm


class TrainStep:
    """The compiled step of `unet` and the state around it: AdamW moments, EMA, loss scale."""

    def __init__(self, unet: Unet, config: TrainConfig, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bfloat16" and ms.get_context("device_target") == "CPU":
            raise ConfigError(f"MindSpore {ms.__version__} has no bfloat16 CPU kernels for "
                             f"{BF16_CPU_MISSING}; train in float32 on CPU (drop --bf16)")
        self.unet, self.config, self.precision = unet, config, precision
        self.prediction_type = config.model.diffusion.prediction_type
        self.self_condition = config.model.unet.self_condition
        unet.set_train(True)
        if precision != "float32":
            # O2: every cell computes in half precision, weights stay float32 (the master copy
            # AdamW updates). O2's float32 black list matches nn.GroupNorm by exact type, not
            # our subclass, so GroupNorm is put back to float32 here (else: "For primitive
            # [GroupNorm], the input type must be same"). O1 cannot be used: it rewrites the
            # network's source and fails on MindSpore's own ops.cat ("got _PyboostConcatPrim").
            amp.auto_mixed_precision(unet, "O2", dtype=getattr(ms, precision))
            for _, cell in unet.cells_and_names():
                if isinstance(cell, GroupNorm):
                    cell.to_float(ms.float32)
        params = unet.trainable_params()
        self.canonical = [mindspore_to_canonical(unet.config)[p.name] for p in params]
        self.weights = WeightUpdate(params, config)
        self.updates = 0  # AdamW's t: applied updates (a skipped float16 step does not count)
        # Dynamic loss scaling (Micikevicius et al. 2018): start at 2^16, halve on overflow,
        # double after 1000 clean steps.
        self.scaler = amp.DynamicLossScaler(2.0 ** 16, 2, 1000) if precision == "float16" else None
        self._grad_fn = ms.value_and_grad(self._loss, None, self.weights.params)
        self.gradients = ms.jit(self._gradients)
        self.estimate_x0 = ms.jit(self._estimate_x0)
        self.update = ms.jit(self.weights.construct)
        self.add = ms.jit(_add_gradients)

    def _loss(self, x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight, cond,
              scale):
        x_t = training.q_sample(x0, noise, signal_coef, noise_coef)
        goal = training.target(x0, noise, target_x0, target_eps)
        if self.self_condition:
            output = self.unet(x_t, t, cond)
        else:
            output = self.unet(x_t, t)
        # training.weighted_mse, spelled out: a graph cannot call the Ops object it takes.
        diff = output.astype(ms.float32) - goal
        per_sample = (diff * diff).reshape(diff.shape[0], -1).mean(axis=1)
        return (weight * per_sample).mean() * scale

    def _gradients(self, x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight,
                   cond, scale):
        return self._grad_fn(x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight,
                             cond, scale)

    def _estimate_x0(self, x_t, t, signal_coef, noise_coef, cond):
        """The model's own x0 estimate, clipped like the samplers feed it back (no gradient)."""
        raw = ops.stop_gradient(self.unet(x_t, t, cond)).astype(ms.float32)
        x0 = training.x0_from_output(raw, x_t, signal_coef, noise_coef, self.prediction_type)
        return ops.clamp(x0, -1.0, 1.0)

    # --- one step from NumPy draws ------------------------------------------------------------

    def batch_tensors(self, x0: np.ndarray, d: training.TrainingDraw, use_self_cond: bool):
        """The loss's inputs as tensors; x0 and the draw are NumPy (host) arrays."""
        def tensor(a):
            return ms.Tensor(np.ascontiguousarray(a, dtype=np.float32))
        x0, noise, t = tensor(x0), tensor(d.noise), tensor(d.t)
        sig, sig_n = tensor(d.signal_coef), tensor(d.noise_coef)
        cond = ops.zeros_like(x0)  # a tensor either way: one compiled graph
        if self.self_condition and use_self_cond:  # Chen et al. 2022: the detached estimate
            x_t = training.q_sample(x0, noise, sig, sig_n)
            cond = self.estimate_x0(x_t, t, sig, sig_n, cond)
        scale = self.scaler.scale_value if self.scaler is not None else ms.Tensor(1.0, ms.float32)
        return (x0, noise, t, sig, sig_n, tensor(d.target_x0), tensor(d.target_eps),
                tensor(d.weight), cond, scale)

    def micro_batch(self, x0: np.ndarray, d: training.TrainingDraw, use_self_cond: bool):
        """(scaled loss, grads) of one micro-batch."""
        return self.gradients(*self.batch_tensors(x0, d, use_self_cond))

    def _update_arguments(self, step_index: int, grad_factor: float) -> tuple:
        cfg, t = self.config, self.updates + 1
        lr = learning_rate_at(step_index, cfg)
        beta1, beta2 = (float(b) for b in cfg.adam_betas)
        # Bias corrections in float64 on the host, like torch's non-capturable AdamW.
        values = (grad_factor, 1.0 - lr * cfg.weight_decay, lr / (1.0 - beta1 ** t),
                  np.sqrt(1.0 - beta2 ** t),
                  1.0 - ema_decay_at(step_index, cfg.ema_decay, cfg.ema_warmup))
        return tuple(ms.Tensor(v, ms.float32) for v in values)

    def step(self, micro_batches, step_index: int) -> tuple[float, bool]:
        """One optimizer step over an iterable of (x0, draw, use_self_cond); returns (mean loss,
        whether the update was applied: False when float16 gradients overflowed)."""
        total_loss, grads, count = None, None, 0
        for x0, d, use_self_cond in micro_batches:
            loss, g = self.micro_batch(x0, d, use_self_cond)
            # mutable: a tuple of tensors passed to a graph is otherwise a constant, and every
            # step would recompile (MindSpore warns "Constant value tensor are detected").
            grads = ms.mutable(g) if grads is None else ms.mutable(self.add(grads, ms.mutable(g)))
            total_loss = loss if total_loss is None else total_loss + loss
            count += 1
        scale = 1.0
        if self.scaler is not None:
            scale = float(self.scaler.scale_value.asnumpy())
            finite = bool(amp.all_finite(grads).asnumpy())
            self.scaler.adjust(ms.Tensor(finite))
            if not finite:
                return float("nan"), False
        self.update(grads, *self._update_arguments(step_index, 1.0 / (scale * count)))
        self.updates += 1
        return float(total_loss.asnumpy()) / (scale * count), True

    # --- state as canonical NumPy arrays ------------------------------------------------------

    def ema_weights(self) -> dict[str, np.ndarray]:
        """The EMA weights under canonical names (what the exported checkpoint holds)."""
        return {name: p.asnumpy().astype(np.float32)
                for name, p in zip(self.canonical, self.weights.ema)}

    def _groups(self):
        w = self.weights
        return (("model", w.params), ("ema", w.ema), ("optimizer.exp_avg", w.exp_avg),
                ("optimizer.exp_avg_sq", w.exp_avg_sq))

    def state_tensors(self) -> dict[str, np.ndarray]:
        """Every tensor a resumed run needs: weights, EMA, AdamW moments and t, loss scale."""
        out = {}
        for prefix, params in self._groups():
            out.update({f"{prefix}.{name}": p.asnumpy() for name, p in zip(self.canonical, params)})
        out["optimizer.state_step"] = np.array([self.updates], dtype=np.int64)
        if self.scaler is not None:
            out["loss_scaler.scale_value"] = self.scaler.scale_value.asnumpy().reshape(1)
            out["loss_scaler.counter"] = self.scaler.counter.asnumpy().reshape(1)
        return out

    def load_state_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        """Restore what state_tensors saved; KeyError names the first tensor that is missing."""
        for prefix, params in self._groups():
            for name, p in zip(self.canonical, params):
                assign_parameter(p, tensors[f"{prefix}.{name}"])
        self.updates = int(tensors["optimizer.state_step"].reshape(-1)[0])
        if self.scaler is not None:
            for key in ("scale_value", "counter"):
                assign_parameter(getattr(self.scaler, key), tensors[f"loss_scaler.{key}"].reshape(()))
