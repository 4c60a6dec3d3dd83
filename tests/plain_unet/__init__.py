"""A second architecture, registered by the tests only: the toolkit's Unet without attention.

It proves the model seam: adding it took this registry entry, a network per framework
(torch_network.py, mindspore_network.py) and nothing else: no sampler, adapter, exporter, ONNX
runtime, trainer loop or app code knows it exists.

    init_conv    conv3x3, channels -> dim
    downs.i      block: ResnetBlock (w_{i-1} -> w_i), the skip; downsample conv3x3/2 (not last)
    mid_block    ResnetBlock (w_{L-1} -> w_{L-1})
    ups.i        block: ResnetBlock on concat([h, skip_i]) -> w_i; upsample (not level 0)
    final_conv   conv1x1, w_0 -> channels
"""
from __future__ import annotations

from dataclasses import dataclass

from diffusion_core.architectures import ARCHITECTURES, Architecture, register
from diffusion_core.architectures.inputs import sample_input, timestep_input
from diffusion_core.architectures.unet import Layer, layer_flops, layer_shapes, resnet_layers
from diffusion_core.parsing import require


@dataclass(frozen=True)
class PlainUnetConfig:
    image_size: int = 8
    channels: int = 1
    dim: int = 8
    dim_mults: tuple[int, ...] = (1, 2)
    groups: int = 4

    def __post_init__(self) -> None:
        require(self.image_size % 2 ** (len(self.dim_mults) - 1) == 0, "image_size must halve per level")
        require(all((self.dim * m) % self.groups == 0 for m in (1,) + self.dim_mults),
                "groups must divide every width")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.dim * m for m in self.dim_mults)


def layers(cfg: PlainUnetConfig) -> list[Layer]:
    t_dim, w, n = 4 * cfg.dim, cfg.widths, len(cfg.dim_mults)
    sizes = [cfg.image_size // 2 ** i for i in range(n)]
    out = [Layer("time_mlp.linear1", "linear", 2 * ((cfg.dim + 1) // 2), t_dim),
           Layer("time_mlp.linear2", "linear", t_dim, t_dim),
           Layer("init_conv", "conv", cfg.channels, cfg.dim, 3, cfg.image_size)]
    c_prev = cfg.dim
    for i in range(n):
        out += resnet_layers(f"downs.{i}.block", c_prev, w[i], sizes[i], t_dim)
        if i < n - 1:
            out.append(Layer(f"downs.{i}.downsample", "conv", w[i], w[i], 3, sizes[i] // 2))
        c_prev = w[i]
    out += resnet_layers("mid_block", w[-1], w[-1], sizes[-1], t_dim)
    for i in range(n):
        h = w[-1] if i == n - 1 else w[i + 1]
        out += resnet_layers(f"ups.{i}.block", h + w[i], w[i], sizes[i], t_dim)
        if i > 0:
            out.append(Layer(f"ups.{i}.upsample", "conv", w[i], w[i], 3, 2 * sizes[i]))
    out.append(Layer("final_conv", "conv", w[0], cfg.channels, 1, cfg.image_size))
    return out


class PlainUnet(Architecture):
    name = "plain_unet"
    title = "Unet without attention (a test architecture)"
    config_class = PlainUnetConfig
    networks = {"pytorch": "plain_unet.torch_network:PlainUnet",
                "mindspore": "plain_unet.mindspore_network:PlainUnet"}

    def parameter_shapes(self, cfg):
        return layer_shapes(layers(cfg))

    def inputs(self, cfg):
        return (sample_input(cfg.channels, cfg.image_size, cfg.image_size), timestep_input())

    def sample_shape(self, cfg):
        return (cfg.channels, cfg.image_size, cfg.image_size)

    def forward_flops(self, cfg, batch):
        return batch * layer_flops(layers(cfg))


ARCHITECTURE = ARCHITECTURES.get("plain_unet") or register(PlainUnet())
