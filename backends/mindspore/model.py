"""The MindSpore side of the model contract: model(x, t, x_self_cond=None) -> raw output.

Also the canonical-weights bridge: float32 NumPy arrays under canonical (PyTorch) names, moved in
and out of the MindSpore Unet through the one name map of names.py, checked strictly.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import ops

from diffusion_core.config import UnetConfig

from .names import canonical_to_mindspore
from .ops import MindSporeOps
from .unet import Unet


def build_unet(cfg: UnetConfig, seed: Optional[int] = None) -> Unet:
    """A freshly initialised Unet for cfg (MindSpore's default initialisation; seeded if asked)."""
    from . import prepare
    prepare()
    if seed is not None:
        ms.set_seed(seed)
    return Unet(cfg)


def _parameters(unet: Unet) -> dict[str, ms.Parameter]:
    return dict(unet.parameters_and_names())


def state_to_numpy(unet: Unet) -> dict[str, np.ndarray]:
    """Canonical weights: canonical name -> float32 array (a copy), in canonical order."""
    params = _parameters(unet)
    return {name: params[ms_name].asnumpy().astype(np.float32, copy=True)
            for name, ms_name in canonical_to_mindspore(unet.config).items()}


def load_state_from_numpy(unet: Unet, state: dict[str, np.ndarray]) -> None:
    """Copy canonical float32 weights into unet; every name must match in name and shape.

    Raises ValueError listing the missing, unexpected and misshaped canonical names; nothing is
    copied then. MindSpore-spelled names (e.g. `...norm1.gamma`) are refused with a hint, since a
    checkpoint always holds canonical names.
    """
    mapping = canonical_to_mindspore(unet.config)
    params = _parameters(unet)
    unmapped = sorted(set(params) - set(mapping.values()))
    if unmapped:  # a bug in names.py or unet.py, not in the user's checkpoint
        raise RuntimeError(f"MindSpore parameters without a canonical name: {unmapped}")
    missing = [n for n in mapping if n not in state]
    unexpected = [n for n in state if n not in mapping]
    misshaped = [f"{n}: checkpoint {tuple(np.shape(state[n]))}, model {tuple(params[m].shape)}"
                 for n, m in mapping.items()
                 if n in state and tuple(np.shape(state[n])) != tuple(params[m].shape)]
    if missing or unexpected or misshaped:
        problems = [f"{label} ({len(names)}): {', '.join(names)}"
                    for label, names in (("missing", missing), ("unexpected", unexpected),
                                         ("misshaped", misshaped)) if names]
        hint = ""
        if any(n in params for n in unexpected):
            hint = (" Some names are MindSpore's own parameter names; convert them to canonical "
                    "names with backends.mindspore.names.mindspore_to_canonical first.")
        raise ValueError("weights do not fit this model; " + "; ".join(problems) + "." + hint
                         + " Check that the checkpoint's config.json matches the model's config")
    for name, ms_name in mapping.items():
        assign_parameter(params[ms_name], state[name])


def assign_parameter(param: ms.Parameter, value: np.ndarray) -> None:
    """Copy value into param in place. Not Parameter.set_data: a graph compiled by mindspore.jit
    before a set_data keeps computing with the old weights (MindSpore 2.10); ops.assign writes
    into the memory the graph reads."""
    # reshape: np.ascontiguousarray turns a 0-d array into shape (1,)
    value = np.ascontiguousarray(value).reshape(tuple(param.shape))
    ops.assign(param, ms.Tensor(value, param.dtype))


def check_inputs(cfg: UnetConfig, x_shape: tuple, self_cond_shape: Optional[tuple]) -> None:
    """Raise a ValueError naming expected and actual shapes before any graph sees the input."""
    expected = (cfg.channels, cfg.image_size, cfg.image_size)
    if len(x_shape) != 4 or tuple(x_shape[1:]) != expected:
        raise ValueError(
            f"Unet input x must have shape (batch, {', '.join(map(str, expected))}) for this "
            f"config (channels={cfg.channels}, image_size={cfg.image_size}), got {tuple(x_shape)}; "
            "resize the images or build the model for this size")
    if self_cond_shape is not None:
        if not cfg.self_condition:
            raise ValueError("this model was built with self_condition=False; pass "
                             "x_self_cond=None or build it with self_condition=True")
        if tuple(self_cond_shape) != tuple(x_shape):
            raise ValueError(f"x_self_cond must have the shape of x {tuple(x_shape)}, got "
                             f"{tuple(self_cond_shape)}")


class MindSporeDenoiserModel:
    """A Unet behind the model contract: `model(x, t, x_self_cond=None)` -> raw output (B, C, H, W).

    x is a float32 mindspore.Tensor (from `self.ops.asarray`), t a Python float timestep in
    [0, T-1], possibly fractional, the same for the whole batch.

    graph=True compiles the Unet with mindspore.jit (graph mode: one compile per batch shape, then
    ~2-3x faster than PyNative on CPU); graph=False runs it op by op (PyNative). Both give the same
    numbers. Calls are serialised by a lock: MindSpore's executor is not documented as thread-safe,
    and Gradio calls from worker threads. No other state survives a call.
    """

    def __init__(self, unet: Unet, graph: bool = True):
        from . import prepare
        prepare()
        self.unet = unet
        self.unet.set_train(False)  # dropout off
        self.config: UnetConfig = unet.config
        self.self_condition = self.config.self_condition
        self.ops = MindSporeOps()
        self.graph = graph
        self._forward = ms.jit(unet.construct) if graph else unet
        self._lock = threading.Lock()

    def __call__(self, x: ms.Tensor, t: float, x_self_cond: Optional[ms.Tensor] = None) -> ms.Tensor:
        check_inputs(self.config, tuple(x.shape),
                     None if x_self_cond is None else tuple(x_self_cond.shape))
        time = ms.Tensor(np.full((x.shape[0],), float(t), dtype=np.float32))
        with self._lock:
            if self.self_condition:  # Chen et al. 2022: zeros when there is no estimate yet
                cond = ops.zeros_like(x) if x_self_cond is None else x_self_cond
                return self._forward(x, time, cond)
            return self._forward(x, time)
