"""The MindSpore side of the model contract: model(x, t, **inputs) -> raw output.

Also the canonical-weights bridge: float32 NumPy arrays under canonical (PyTorch) names, moved in
and out of a MindSpore network through the one name map of names.py, checked strictly.
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import ops

from diffusion_core.architectures import ModelInput, complete_inputs, declared_inputs

from .names import canonical_to_mindspore
from .ops import MindSporeOps


def build_network(network_config, seed: Optional[int] = None):
    """A freshly initialised MindSpore network for network_config (the architecture's entry names
    it), with MindSpore's default initialisation, seeded if asked."""
    from backends import build_network as build
    from . import prepare
    prepare()
    if seed is not None:
        ms.set_seed(seed)
    return build("mindspore", network_config)


def _parameters(network) -> dict[str, ms.Parameter]:
    return dict(network.parameters_and_names())


def state_to_numpy(network) -> dict[str, np.ndarray]:
    """Canonical weights: canonical name -> float32 array (a copy), in canonical order."""
    params = _parameters(network)
    return {name: params[ms_name].asnumpy().astype(np.float32, copy=True)
            for name, ms_name in canonical_to_mindspore(network).items()}


def load_state_from_numpy(network, state: dict[str, np.ndarray]) -> None:
    """Copy canonical float32 weights into network; every name must match in name and shape.

    Raises ValueError listing the missing, unexpected and misshaped canonical names; nothing is
    copied then. MindSpore-spelled names (e.g. `...norm1.gamma`) are refused with a hint, since a
    checkpoint always holds canonical names.
    """
    mapping = canonical_to_mindspore(network)
    params = _parameters(network)
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


class MindSporeDenoiserModel:
    """A network behind the model contract: `model(x, t, **inputs)` -> raw output (B, C, H, W).

    x is a float32 mindspore.Tensor (from `self.ops.asarray`), t a Python float timestep in
    [0, T-1], possibly fractional, the same for the whole batch; inputs are the optional inputs
    `declared` names, and those not given get their declared defaults, so a compiled graph always
    sees one signature. Shapes are checked before the graph sees them.

    graph=True compiles the network with mindspore.jit (graph mode: one compile per batch shape,
    then ~2-3x faster than PyNative on CPU); graph=False runs it op by op (PyNative). Both give the
    same numbers. Calls are serialised by a lock: MindSpore's executor is not documented as
    thread-safe, and Gradio calls from worker threads. No other state survives a call.
    """

    def __init__(self, network, declared: Optional[Sequence[ModelInput]] = None, graph: bool = True):
        """declared: the network's inputs; by default those its config's architecture declares."""
        from . import prepare
        prepare()
        self.network = network
        self.network.set_train(False)  # dropout off
        self.declared = tuple(declared if declared is not None else declared_inputs(network))
        self.sample_input = self.declared[0]
        self.ops = MindSporeOps()
        self.graph = graph
        self._forward = ms.jit(network.construct) if graph else network
        self._lock = threading.Lock()

    def __call__(self, x: ms.Tensor, t: float, **inputs: ms.Tensor) -> ms.Tensor:
        expected = self.sample_input.concrete_shape(x.shape[0])
        if tuple(x.shape) != expected:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, expected[1:]))}) for this "
                             f"model, got {tuple(x.shape)}; resize the images or build the model "
                             "for this size")
        extra = complete_inputs(self.declared, inputs, x.shape[0], self.ops)
        time = ms.Tensor(np.full((x.shape[0],), float(t), dtype=np.float32))
        with self._lock:
            return self._forward(x, time, *extra)
