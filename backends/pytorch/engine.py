"""The PyTorch step engine of the shared training loop (diffusion_core/training/loop.py).

One optimizer step from the loop's NumPy draws: forward and backward per micro-batch (gradients
accumulated, DistributedDataParallel's all-reduce on the last one only), global-norm clipping,
AdamW, the EMA. Learning rate and EMA decay come from diffusion_core.training.rules.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Optional, Sequence

import numpy as np
import torch

from backends import build_network
from diffusion_core import training
from diffusion_core.architectures import CLASS_LABEL, SELF_CONDITION, find_role, optional_inputs
from diffusion_core.cpu import bf16_instructions
from diffusion_core.data import Dataset
from diffusion_core.training import state as run_state
from diffusion_core.training.config import TrainConfig
from diffusion_core.training.engine import MicroBatch
from diffusion_core.training.rules import learning_rate_at

from . import distributed, trainer_state
from .ema import EMA
from .model import TorchDenoiserModel, load_state_from_numpy, state_to_numpy
from .ops import TorchOps

STATE_FORMAT = run_state.PYTORCH_FORMAT
# bf16 autocast changes the rounding of a step but not its maths, so a resumed run may switch it
# (the MindSpore trainer may not: its float16 path scales the loss).
FREE_ON_RESUME = run_state.FREE_ON_RESUME | {"bf16"}


class TorchEngine:
    state_format = STATE_FORMAT
    free_on_resume = FREE_ON_RESUME

    def __init__(self, config: TrainConfig, dataset: Dataset, info: distributed.Dist,
                 device: torch.device, compile_model: bool = False):
        self.config, self.info, self.torch_device = config, info, device
        self.framework = f"pytorch {torch.__version__}"
        self.device = "cpu" if device.type == "cpu" else str(device)
        self.rank, self.world_size = info.rank, info.world_size
        self.declared = config.model.inputs
        self.optional = optional_inputs(self.declared)
        self.self_condition = find_role(self.declared, SELF_CONDITION)
        self.class_label = find_role(self.declared, CLASS_LABEL)
        self.prediction_type = config.model.diffusion.prediction_type
        torch.manual_seed(config.seed)                    # the same initial weights on every rank
        self.network = build_network("pytorch", config.model.network).to(device)
        if config.init_from:  # fine-tuning: start from a checkpoint's weights (EMA included)
            from diffusion_core.training.config import initial_weights
            load_state_from_numpy(self.network, initial_weights(config))
        torch.manual_seed(config.seed * 1_000_003 + info.rank)  # dropout: each rank its own stream
        self.ema = EMA(self.network, config.ema_decay, config.ema_warmup)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=config.lr, betas=config.adam_betas,
                                           weight_decay=config.weight_decay, **fused)
        self.images = torch.from_numpy(dataset.images).to(device)  # the whole set lives on the device
        self.ops = TorchOps(device)
        self.model = self.ddp = self.network
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.model = self.ddp = DistributedDataParallel(
                self.network, device_ids=[device] if device.type == "cuda" else None)
        if compile_model:
            self.model = torch.compile(self.model)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
        if config.bf16 and device.type == "cpu" and bf16_instructions() is False and info.rank == 0:
            print("warning: --bf16 on a CPU without bf16 instructions (AVX-512 bf16 or AMX): PyTorch "
                  "emulates them, measured 7.6x slower than fp32 on an AVX2-only EPYC; drop --bf16 here",
                  file=sys.stderr, flush=True)

    # --- one step -----------------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.torch_device.type == "cuda":
            tensor = tensor.pin_memory()  # so the copy below really runs asynchronously
        return tensor.to(self.torch_device, non_blocking=True)

    def _defaults(self, batch: int) -> dict[str, torch.Tensor]:
        """Every optional input at its declared default (zeros for an x0 estimate, ...)."""
        return {spec.name: torch.full(spec.concrete_shape(batch), spec.fill,
                                      dtype=getattr(torch, spec.dtype), device=self.torch_device)
                for spec in self.optional}

    def micro_batch_loss(self, mb: MicroBatch) -> torch.Tensor:
        d = mb.draw
        b, rest = d.noise.shape[0], d.noise.shape[1:]
        n = int(np.prod(d.noise.shape))
        # One host-to-device copy for every float of the draw; t fits float32 exactly (T <= 1e5).
        pack = self._to_device(np.concatenate([d.noise.ravel(), d.t.astype(np.float32), d.signal_coef.ravel(),
                                               d.noise_coef.ravel(), d.target_x0.ravel(),
                                               d.target_eps.ravel(), d.weight]))
        noise = pack[:n].view(b, *rest)
        t, sig, sig_n, tgt_x0, tgt_eps, weight = pack[n:].view(6, b)
        column = (b,) + (1,) * len(rest)
        sig, sig_n, tgt_x0, tgt_eps = (v.view(column) for v in (sig, sig_n, tgt_x0, tgt_eps))
        x0 = self.images.index_select(0, self._to_device(mb.index))
        x_t = training.q_sample(x0, noise, sig, sig_n)
        goal = training.target(x0, noise, tgt_x0, tgt_eps)
        inputs = self._defaults(b)  # a tensor for every input either way: one graph for torch.compile
        if self.class_label is not None:
            inputs[self.class_label.name] = self._to_device(mb.class_labels)
        with self.autocast:
            if self.self_condition is not None and mb.use_self_condition:
                # Chen et al. 2022: condition on the model's own detached x0 estimate, clamped as
                # the samplers feed it back (clip_x0)
                with torch.no_grad():
                    raw = self.network(x_t, t, *inputs.values()).float()
                    estimate = training.x0_from_output(raw, x_t, sig, sig_n, self.prediction_type)
                    inputs[self.self_condition.name] = estimate.clamp(-1.0, 1.0)
            output = self.model(x_t, t, *inputs.values())
        return training.weighted_mse(self.ops, output.float(), goal, weight)

    def step(self, micro_batches: Sequence[MicroBatch], step_index: int) -> tuple[torch.Tensor, bool]:
        cfg = self.config
        total = torch.zeros((), device=self.torch_device)
        for i, mb in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not self.info.enabled else self.ddp.no_sync()
            with sync:
                loss = self.micro_batch_loss(mb) / len(micro_batches)
                loss.backward()
            total += loss.detach()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(step_index, cfg)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.network, step_index)
        return total, True

    def mean_loss(self, losses: Sequence[torch.Tensor]) -> float:
        window = torch.stack(list(losses)).sum()
        if self.info.enabled:
            torch.distributed.all_reduce(window)
            window /= self.info.world_size
        return window.item() / len(losses)

    # --- weights and state --------------------------------------------------------------------
    def ema_model(self) -> TorchDenoiserModel:
        return TorchDenoiserModel(self.ema.module, self.declared, self.torch_device)

    def ema_weights(self) -> dict[str, np.ndarray]:
        return state_to_numpy(self.ema.module)

    def state_arrays(self) -> dict[str, np.ndarray]:
        tensors = {f"model.{n}": p for n, p in self.network.named_parameters()}
        tensors.update({f"ema.{n}": p for n, p in self.ema.module.named_parameters()})
        opt_tensors, _ = trainer_state.optimizer_tensors(self.optimizer)
        tensors.update(opt_tensors)
        return {k: v.detach().to("cpu").contiguous().numpy() for k, v in tensors.items()}

    def state_meta(self) -> dict:
        return {"optimizer": trainer_state.optimizer_tensors(self.optimizer)[1]}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        with torch.no_grad():
            for prefix, module in (("model", self.network), ("ema", self.ema.module)):
                for name, p in module.named_parameters():
                    p.copy_(torch.from_numpy(arrays[f"{prefix}.{name}"]))
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("optimizer.")}
        trainer_state.load_optimizer(self.optimizer, tensors, meta["optimizer"])

    def rank_state(self) -> dict[str, np.ndarray]:
        states = {"torch_cpu": torch.get_rng_state().numpy().copy()}
        if self.torch_device.type == "cuda":
            states["torch_cuda"] = torch.cuda.get_rng_state(self.torch_device).numpy().copy()
        return states

    def load_rank_state(self, arrays: dict[str, np.ndarray]) -> None:
        torch.set_rng_state(torch.from_numpy(arrays["torch_cpu"]))
        if "torch_cuda" in arrays and self.torch_device.type == "cuda":
            torch.cuda.set_rng_state(torch.from_numpy(arrays["torch_cuda"]), self.torch_device)

    def gather(self, obj: Any) -> list[Any]:
        return distributed.gather(self.info, obj)

    def check_replicas(self) -> Optional[str]:
        return distributed.check_replicas(self.info, self.network) if self.info.enabled else None
