"""The one map between canonical parameter names (PyTorch's) and a MindSpore network's.

A MindSpore network of any architecture names its cells like the PyTorch network names its
modules, so module paths agree; only the last part of a parameter name can differ, and it depends
on MindSpore's own spelling alone, never on the architecture:

    MindSpore          canonical
    gamma              weight          GroupNorm / LayerNorm / BatchNorm affine scale
    beta               bias            their affine shift
    embedding_table    weight          nn.Embedding
    moving_mean        running_mean    BatchNorm statistics
    moving_variance    running_var
    weight, bias       unchanged       Conv2d (c_out, c_in, k, k) and Dense (out, in) as in PyTorch

Shapes are identical, so a weight moves between frameworks by name alone. The map is derived
from the network's own parameters and checked against the architecture's canonical table, so a
new architecture needs no name table of its own.
"""
from __future__ import annotations

from diffusion_core.architectures import architecture_of
# The rule itself lives in the core, which reads MindSpore .ckpt files without MindSpore.
from diffusion_core.convert.ms_checkpoint import SUFFIXES, canonical_name  # noqa: F401


def canonical_to_mindspore(network) -> dict[str, str]:
    """Canonical name -> MindSpore parameter name for every parameter of `network` (a Cell with a
    `config` of a registered architecture), in the architecture's canonical order.

    RuntimeError if the network's parameters and the architecture's table disagree: a bug in the
    network, never in a user's checkpoint."""
    found = {canonical_name(name): name for name, _ in network.parameters_and_names()}
    expected = architecture_of(network.config).parameter_shapes(network.config)
    if set(found) != set(expected):
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        raise RuntimeError(f"the MindSpore network's parameters do not match the canonical table: "
                           f"unexpected {extra[:5]}, missing {missing[:5]}")
    return {name: found[name] for name in expected}


def mindspore_to_canonical(network) -> dict[str, str]:
    """MindSpore parameter name -> canonical name (the inverse of canonical_to_mindspore)."""
    return {ms_name: name for name, ms_name in canonical_to_mindspore(network).items()}
