"""Denoisers: a backend model turned into the one contract samplers see, (x_t, t, alpha_bar) ->
(eps, x0), by composable wrappers (wrappers.py, guidance.py), in the manner of dpm-solver's
model_wrapper and k-diffusion's external.py.

`build_denoiser` reads the model's declared inputs (diffusion_core.architectures) to decide which
wrappers it needs: a self-conditioning input gets the SelfConditioning wrapper under the declared
name. No wrapper writes an input name of its own.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from ..architectures.inputs import SELF_CONDITION, ModelInput, find_role, optional_inputs
from ..ops import Ops, Tensor
from ..prediction import Prediction
from .guidance import ClassifierFreeGuidance, Guidance, Guided, no_guidance
from .inpainting import KnownRegion
from .wrappers import Layer, ModelPrediction, ProcessX0, SelfConditioning, X0Processing


class Denoiser:
    """What a sampler calls, for one sample() call: `denoise(x_t, t, alpha_bar) -> Prediction`.

    `inputs` are held fixed for the call (e.g. the class labels of the batch, as backend tensors).
    """

    def __init__(self, layer: Layer, model_prediction: ModelPrediction,
                 inputs: Optional[Mapping[str, Tensor]] = None):
        self.layer, self.model_prediction = layer, model_prediction
        self.inputs = dict(inputs or {})

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float) -> Prediction:
        return self.layer(x_t, t, alpha_bar, self.inputs)

    @property
    def evaluations(self) -> int:
        """Model calls so far (one per forward pass, whatever its batch)."""
        return self.model_prediction.evaluations


def build_denoiser(model: Callable[..., Any], prediction_type: str, ops: Ops, *,
                   model_inputs: Sequence[ModelInput] = (), inputs: Optional[Mapping[str, Tensor]] = None,
                   x0_processing: X0Processing = X0Processing(),
                   guidance: Guidance = no_guidance,
                   known: Optional[tuple[Tensor, Tensor, Tensor]] = None) -> Denoiser:
    """Compose the wrappers for a model whose declared inputs are `model_inputs`.

    inputs: {declared name: backend tensor} given for the whole call; a name the model does not
    declare, or one the chain fills itself (self-conditioning), is an error.
    guidance: the guidance slot (ClassifierFreeGuidance, or the identity).
    known: (image, mask, noise) for inpainting (inpainting.py), as backend tensors.
    """
    declared = optional_inputs(model_inputs)
    self_cond = find_role(declared, SELF_CONDITION)
    given = dict(inputs or {})
    allowed = {i.name for i in declared} - ({self_cond.name} if self_cond else set())
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"this model takes no input(s) {unknown} from the caller; it declares "
                         f"{sorted(allowed) or 'none besides x and t'}")
    model_prediction = ModelPrediction(model, prediction_type)
    layer: Layer = ProcessX0(Guided(model_prediction, guidance), x0_processing, ops)
    if known is not None:
        layer = KnownRegion(layer, *known)
    if self_cond is not None:
        layer = SelfConditioning(layer, self_cond.name, ops)
    return Denoiser(layer, model_prediction, given)


__all__ = ["ClassifierFreeGuidance", "Denoiser", "Guidance", "Guided", "KnownRegion", "ModelPrediction",
           "ProcessX0", "SelfConditioning", "X0Processing", "build_denoiser", "no_guidance"]
