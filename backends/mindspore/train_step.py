"""One optimizer step in MindSpore graph mode: loss, gradients, clipping, loss scaling, AdamW, EMA.

What to draw and what to aim at comes from diffusion_core.training (the framework-neutral half);
this file is the MindSpore half. Two compiled graphs per step:

    gradients(batch)   loss and d loss / d weights of one micro-batch (Ho et al. 2020, Alg. 1)
    update(grads)      global-norm clipping, AdamW (Loshchilov & Hutter 2019), EMA of the weights

The update is one graph over all weights as one flat vector (WeightUpdate). MindSpore 2.10 facts
that shape it: a Python loop over ~160 parameters inside a jit function takes ~100 s to compile
(ops.HyperMap does the same in seconds); ops.split into 159 pieces exceeds the graph compiler's
call depth and SplitV has no CPU kernel (ops.narrow per piece works); and
mindspore.experimental.optim.AdamW cannot be called inside another jit function (its
own @jit `implementation` then fails with "The parameters number of the function is 9, but the
number of provided arguments is 1"), so AdamW is written here, with torch.optim.AdamW's formula.

Mixed precision: `precision` is float32 (default), bfloat16 (no loss scaling needed) or float16
(dynamic loss scaling: the loss is multiplied by a large scale so small gradients survive
float16, the gradients divided back, and a step with Inf/NaN gradients is skipped while the scale
halves). MindSpore 2.10 on CPU has no bfloat16 kernels for Conv2D, BatchMatMul, Softmax, Sigmoid,
GroupNorm or Sin, so bfloat16 is refused there; float16 has CPU kernels and runs.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import amp, nn, ops

from diffusion_core import training
from diffusion_core.architectures import CLASS_LABEL, SELF_CONDITION, find_role, optional_inputs
from diffusion_core.parsing import ConfigError
from diffusion_core.training.config import TrainConfig
from diffusion_core.training.rules import ema_decay_at, learning_rate_at

from .blocks import GroupNorm
from .model import assign_parameter
from .names import mindspore_to_canonical

PRECISIONS = ("float32", "bfloat16", "float16")
BF16_CPU_MISSING = "Conv2D, BatchMatMul, Softmax, Sigmoid, GroupNorm and Sin"


_hyper_map = ops.HyperMap()
_flatten = ops.MultitypeFuncGraph("flatten")
_assign_piece = ops.MultitypeFuncGraph("assign_piece")
_add = ops.MultitypeFuncGraph("add")


@_flatten.register("Tensor")
def _flatten_one(t):
    return t.reshape(-1)


@_assign_piece.register("Tensor", "Tensor", "Number", "Number")
def _assign_piece_one(flat, param, offset, size):
    return ops.assign(param, ops.narrow(flat, 0, offset, size).reshape(param.shape))


@_add.register("Tensor", "Tensor")
def _add_one(a, b):
    return a + b


def _add_gradients(a, b):
    return _hyper_map(_add, a, b)


def _graph_tuple(tensors: list):
    """A tuple of tensors as a graph input that stays an input (ms.mutable), not a constant that
    recompiles the graph for every new value; the empty tuple is a constant anyway."""
    return ms.mutable(tuple(tensors)) if tensors else ()


class WeightUpdate(nn.Cell):
    """Clip the gradients' global norm, take an AdamW step, update the EMA: one graph.

    The optimizer state (exp_avg, exp_avg_sq: Adam's m and v) and the EMA are single flat float32
    vectors over all weights, in parameter order: AdamW and the EMA are then ~20 kernels over one
    long vector instead of ~20 per parameter (measured 76 ms instead of 185 ms per step for the
    default Unet's 159 tensors). The weights themselves stay the Unet's Parameters: they are
    gathered with one concat and written back piece by piece.
    """

    def __init__(self, params: list, config: TrainConfig, world_size: int = 1):
        super().__init__()
        self.params = ms.ParameterTuple(params)
        # Data parallel (distributed.py): every rank's gradients summed by one AllReduce of the
        # flat vector, then averaged, before clipping, as DistributedDataParallel does.
        self.world_size = world_size
        self.all_reduce = ops.AllReduce() if world_size > 1 else None
        self.sizes = tuple(int(np.prod(p.shape)) for p in params)
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.sizes[:-1]))
        flat = np.concatenate([p.asnumpy().reshape(-1) for p in params]).astype(np.float32)
        # Names must differ from every Unet parameter's: a graph refuses two of the same name.
        self.exp_avg = ms.Parameter(ms.Tensor(np.zeros_like(flat)), name="train.exp_avg")
        self.exp_avg_sq = ms.Parameter(ms.Tensor(np.zeros_like(flat)), name="train.exp_avg_sq")
        self.ema = ms.Parameter(ms.Tensor(flat), name="train.ema")
        self.beta1, self.beta2 = (float(b) for b in config.adam_betas)
        self.eps, self.grad_clip = 1e-8, float(config.grad_clip)

    def construct(self, grads, grad_factor, decay_factor, step_size, bias2_sqrt, ema_weight):
        g = ops.cat(_hyper_map(_flatten, grads)) * grad_factor
        if self.world_size > 1:
            g = self.all_reduce(g) / self.world_size
        norm = ops.sqrt((g * g).sum())
        if self.grad_clip > 0:
            # clip_grad_norm_'s factor: max_norm / (norm + 1e-6), never above 1
            g = g * ops.minimum(self.grad_clip / (norm + 1e-6), 1.0)
        # torch.optim.AdamW: p *= 1 - lr wd; m, v moving moments of g and g^2;
        # p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        m = self.exp_avg * self.beta1 + g * (1.0 - self.beta1)
        v = self.exp_avg_sq * self.beta2 + g * g * (1.0 - self.beta2)
        ops.assign(self.exp_avg, m)
        ops.assign(self.exp_avg_sq, v)
        weights = ops.cat(_hyper_map(_flatten, self.params))
        updated = weights * decay_factor - step_size * m / (ops.sqrt(v) / bias2_sqrt + self.eps)
        _hyper_map(ops.partial(_assign_piece, updated), self.params, self.offsets, self.sizes)
        # ema <- decay ema + (1 - decay) weights, from the updated weights
        ops.assign(self.ema, self.ema + ema_weight * (updated - self.ema))
        return norm

    def pieces(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat vector (e.g. the EMA) cut into arrays shaped like the parameters."""
        return [flat[o:o + n].reshape(p.shape)
                for o, n, p in zip(self.offsets, self.sizes, self.params)]


class TrainStep:
    """The compiled step of a network and the state around it: AdamW moments, EMA, loss scale."""

    def __init__(self, unet, config: TrainConfig, precision: str = "float32", collectives=None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bfloat16" and ms.get_context("device_target") == "CPU":
            raise ConfigError(f"MindSpore {ms.__version__} has no bfloat16 CPU kernels for "
                             f"{BF16_CPU_MISSING}; train in float32 on CPU (drop --bf16)")
        self.unet, self.config, self.precision = unet, config, precision
        self.prediction_type = config.model.diffusion.prediction_type
        self.optional = optional_inputs(config.model.inputs)
        self.self_condition = find_role(self.optional, SELF_CONDITION)
        self.class_label = find_role(self.optional, CLASS_LABEL)
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
        to_canonical = mindspore_to_canonical(unet)
        self.canonical = [to_canonical[p.name] for p in params]
        self.collectives = collectives
        world_size = collectives.info.world_size if collectives is not None else 1
        self.weights = WeightUpdate(params, config, world_size)
        self.updates = 0  # AdamW's t: applied updates (a skipped float16 step does not count)
        # Dynamic loss scaling (Micikevicius et al. 2018): start at 2^16, halve on overflow,
        # double after 1000 clean steps.
        self.scaler = amp.DynamicLossScaler(2.0 ** 16, 2, 1000) if precision == "float16" else None
        self._grad_fn = ms.value_and_grad(self._loss, None, self.weights.params)
        self.gradients = ms.jit(self._gradients)
        self.estimate_x0 = ms.jit(self._estimate_x0)
        self.update = ms.jit(self.weights.construct)
        self.add = ms.jit(_add_gradients)

    def _loss(self, x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight, extra,
              scale):
        """extra: the network's optional inputs in declaration order (a tuple, maybe empty)."""
        x_t = training.q_sample(x0, noise, signal_coef, noise_coef)
        goal = training.target(x0, noise, target_x0, target_eps)
        output = self.unet(x_t, t, *extra)
        # training.weighted_mse, spelled out: a graph cannot call the Ops object it takes.
        diff = output.astype(ms.float32) - goal
        per_sample = (diff * diff).reshape(diff.shape[0], -1).mean(axis=1)
        return (weight * per_sample).mean() * scale

    def _gradients(self, x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight,
                   extra, scale):
        return self._grad_fn(x0, noise, t, signal_coef, noise_coef, target_x0, target_eps, weight,
                             extra, scale)

    def _estimate_x0(self, x_t, t, signal_coef, noise_coef, extra):
        """The model's own x0 estimate, clipped like the samplers feed it back (no gradient)."""
        raw = ops.stop_gradient(self.unet(x_t, t, *extra)).astype(ms.float32)
        x0 = training.x0_from_output(raw, x_t, signal_coef, noise_coef, self.prediction_type)
        return ops.clamp(x0, -1.0, 1.0)

    # --- one step from NumPy draws ------------------------------------------------------------

    def batch_tensors(self, x0: np.ndarray, d: training.TrainingDraw, use_self_cond: bool,
                      labels: np.ndarray | None = None):
        """The loss's inputs as tensors; x0, the draw and the labels are NumPy (host) arrays."""
        def tensor(a):
            return ms.Tensor(np.ascontiguousarray(a, dtype=np.float32))
        x0, noise, t = tensor(x0), tensor(d.noise), tensor(d.t)
        sig, sig_n = tensor(d.signal_coef), tensor(d.noise_coef)
        # every optional input at its declared default: a tensor either way, one compiled graph
        batch = x0.shape[0]
        extra = [ms.Tensor(spec.default(batch)) for spec in self.optional]
        if self.class_label is not None:
            extra[self.optional.index(self.class_label)] = ms.Tensor(np.asarray(labels, np.int64))
        if self.self_condition is not None and use_self_cond:  # Chen et al. 2022: the detached estimate
            x_t = training.q_sample(x0, noise, sig, sig_n)
            extra[self.optional.index(self.self_condition)] = self.estimate_x0(
                x_t, t, sig, sig_n, _graph_tuple(extra))
        scale = self.scaler.scale_value if self.scaler is not None else ms.Tensor(1.0, ms.float32)
        return (x0, noise, t, sig, sig_n, tensor(d.target_x0), tensor(d.target_eps),
                tensor(d.weight), _graph_tuple(extra), scale)

    def micro_batch(self, x0: np.ndarray, d: training.TrainingDraw, use_self_cond: bool,
                    labels: np.ndarray | None = None):
        """(scaled loss, grads) of one micro-batch."""
        return self.gradients(*self.batch_tensors(x0, d, use_self_cond, labels))

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
        """One optimizer step over an iterable of (x0, draw, use_self_cond, labels); returns (mean
        loss, whether the update was applied: False when float16 gradients overflowed)."""
        total_loss, grads, count = None, None, 0
        for x0, d, use_self_cond, labels in micro_batches:
            loss, g = self.micro_batch(x0, d, use_self_cond, labels)
            # mutable: a tuple of tensors passed to a graph is otherwise a constant, and every
            # step would recompile (MindSpore warns "Constant value tensor are detected").
            grads = ms.mutable(g) if grads is None else ms.mutable(self.add(grads, ms.mutable(g)))
            total_loss = loss if total_loss is None else total_loss + loss
            count += 1
        scale = 1.0
        if self.scaler is not None:
            scale = float(self.scaler.scale_value.asnumpy())
            finite = bool(amp.all_finite(grads).asnumpy())
            if self.collectives is not None:  # one rank's overflow skips the step on every rank
                finite = self.collectives.all_true(finite)
            self.scaler.adjust(ms.Tensor(finite))
            if not finite:
                return float("nan"), False
        self.update(grads, *self._update_arguments(step_index, 1.0 / (scale * count)))
        self.updates += 1
        return float(total_loss.asnumpy()) / (scale * count), True

    # --- state as canonical NumPy arrays ------------------------------------------------------

    def ema_weights(self) -> dict[str, np.ndarray]:
        """The EMA weights under canonical names (what the exported checkpoint holds)."""
        return dict(zip(self.canonical, self.weights.pieces(self.weights.ema.asnumpy())))

    def _flat_state(self) -> tuple:
        w = self.weights
        return (("ema", w.ema), ("optimizer.exp_avg", w.exp_avg),
                ("optimizer.exp_avg_sq", w.exp_avg_sq))

    def state_tensors(self) -> dict[str, np.ndarray]:
        """Every tensor a resumed run needs, under canonical names: weights, EMA, AdamW moments
        and t, loss scale."""
        out = {f"model.{name}": p.asnumpy() for name, p in zip(self.canonical, self.weights.params)}
        for prefix, flat in self._flat_state():
            pieces = self.weights.pieces(flat.asnumpy())
            out.update({f"{prefix}.{name}": a for name, a in zip(self.canonical, pieces)})
        out["optimizer.state_step"] = np.array([self.updates], dtype=np.int64)
        if self.scaler is not None:
            out["loss_scaler.scale_value"] = self.scaler.scale_value.asnumpy().reshape(1)
            out["loss_scaler.counter"] = self.scaler.counter.asnumpy().reshape(1)
        return out

    def load_state_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        """Restore what state_tensors saved; KeyError names the first tensor that is missing."""
        for name, p in zip(self.canonical, self.weights.params):
            assign_parameter(p, tensors[f"model.{name}"])
        for prefix, flat in self._flat_state():
            assign_parameter(flat, np.concatenate(
                [tensors[f"{prefix}.{name}"].reshape(-1) for name in self.canonical]))
        self.updates = int(tensors["optimizer.state_step"].reshape(-1)[0])
        if self.scaler is not None:
            for key in ("scale_value", "counter"):
                assign_parameter(getattr(self.scaler, key), tensors[f"loss_scaler.{key}"].reshape(()))
