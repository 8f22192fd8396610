"""MobileSAM's image encoder: the TinyViT-5M network with SAM's neck, in PyTorch.

Written for this project from the architecture's description (TinyViT, Wu et al. 2022; MobileSAM,
Zhang et al. 2023); it loads the image-encoder part of the published ``mobile_sam.pt`` state
dict as it is: every parameter and buffer name (``image_encoder.`` stripped) and shape matches,
so ``load_state_dict(strict=True)`` accepts it. tests/test_sam.py checks the output against the
MobileSAM project's own code (the ``mobilesam-mirror`` package) built from the same weights.

Input ``float32 (B, 3, 1024, 1024)`` (SAM's normalised, padded photo); output the embedding
``float32 (B, 256, 64, 64)``. Shape of the network (MobileSAM's ``vit_t``):

* ``patch_embed``: two 3x3 stride-2 convolutions (3 -> 32 -> 64 channels), 1024 -> 256 pixels;
* stage 0: two MBConv blocks at 64 channels, then a patch merge to 128 channels, 128 x 128;
* stages 1-3: windowed-attention blocks (2, 6, 2 blocks; 4, 5, 10 heads; windows 7, 14, 7) at
  128, 160, 320 channels; the merge into the last stage keeps 64 x 64 (stride 1) so the output
  grid is SAM's;
* ``neck``: 1x1 and 3x3 convolutions to 256 channels, each followed by a channel LayerNorm.

The classifier (``norm_head``, ``head``) is kept only so the published file loads strictly; it
is not run. Batch norms run in inference mode (the module is always used in ``eval()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TinyViT", "MOBILE_SAM_STAGES"]

#: MobileSAM's stages: (channels, blocks, attention heads or 0 for MBConv, window, merge stride).
MOBILE_SAM_STAGES = (
    (64, 2, 0, 0, 2),
    (128, 2, 4, 7, 2),
    (160, 6, 5, 14, 1),
    (320, 2, 10, 7, 0),
)
#: Channels of SAM's image embedding.
EMBEDDING_CHANNELS = 256


class ConvNorm(nn.Module):
    """Convolution without bias followed by a batch norm (state dict keys ``c.*``, ``bn.*``)."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1):
        super().__init__()
        self.c = nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups,
                           bias=False)
        self.bn = nn.BatchNorm2d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: ``(B, 3, H, W)`` -> ``(B, channels, H/4, W/4)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.seq = nn.Sequential(
            ConvNorm(3, channels // 2, 3, 2), nn.GELU(), ConvNorm(channels // 2, channels, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand (x4), 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, channels: int, expand: int = 4):
        super().__init__()
        hidden = channels * expand
        self.conv1 = ConvNorm(channels, hidden)
        self.conv2 = ConvNorm(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvNorm(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Tokens or a feature map at ``size`` -> tokens ``(B, L', outputs)``: 1x1 conv, 3x3
    depthwise conv with ``stride``, 1x1 conv, GELU between them."""

    def __init__(self, size: tuple[int, int], inputs: int, outputs: int, stride: int):
        super().__init__()
        self.size = size
        self.conv1 = ConvNorm(inputs, outputs)
        self.conv2 = ConvNorm(outputs, outputs, 3, stride, groups=outputs)
        self.conv3 = ConvNorm(outputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens (B, L, C) -> map (B, C, H, W)
            height, width = self.size
            x = x.transpose(1, 2).reshape(x.shape[0], -1, height, width)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


def _offset_index(window: int) -> torch.Tensor:
    """``(window**2, window**2)`` index into the per-head bias table: the table holds one entry
    per absolute offset ``(|dy|, |dx|)``, entry ``|dy| * window + |dx|``."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Multi-head self-attention over one window of tokens with a learned bias per head and
    absolute offset (``attention_biases``: ``(heads, window**2)``). LayerNorm first."""

    def __init__(self, channels: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.head_channels = channels // heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("bias_index", _offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C), N = window**2
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.heads, 3 * self.head_channels)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_channels, dim=3)
        scores = (q @ k.transpose(-2, -1)) * self.head_channels**-0.5
        scores = scores + self.attention_biases[:, self.bias_index]
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class Mlp(nn.Module):
    """LayerNorm, Linear (x4), GELU, Linear."""

    def __init__(self, channels: int, ratio: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, channels * ratio)
        self.fc2 = nn.Linear(channels * ratio, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), a 3x3 depthwise conv on the token map, MLP (residual).

    The token map is padded with zeros at the bottom and right up to a multiple of the window;
    the padded tokens take part in the attention (as keys and values) and are cut off after it.
    """

    def __init__(self, size: tuple[int, int], channels: int, heads: int, window: int):
        super().__init__()
        self.size, self.window = size, window
        self.attn = Attention(channels, heads, window)
        self.local_conv = ConvNorm(channels, channels, 3, groups=channels)
        self.mlp = Mlp(channels)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.size
        w = self.window
        batch, _, channels = x.shape
        if height == w and width == w:
            return self.attn(x)
        grid = x.view(batch, height, width, channels)
        pad_bottom, pad_right = -height % w, -width % w
        if pad_bottom or pad_right:
            grid = F.pad(grid, (0, 0, 0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // w, (width + pad_right) // w
        windows = grid.view(batch, rows, w, cols, w, channels).transpose(2, 3)
        windows = self.attn(windows.reshape(batch * rows * cols, w * w, channels))
        grid = windows.view(batch, rows, cols, w, w, channels).transpose(2, 3)
        grid = grid.reshape(batch, rows * w, cols * w, channels)[:, :height, :width]
        return grid.reshape(batch, height * width, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H*W, C)
        height, width = self.size
        batch, tokens, channels = x.shape
        x = x + self._windowed_attention(x)
        grid = self.local_conv(x.transpose(1, 2).reshape(batch, channels, height, width))
        x = grid.view(batch, channels, tokens).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """One stage: ``blocks`` (MBConv or TinyViT blocks) then an optional ``downsample``."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (eps 1e-6, as in SAM's neck)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViT(nn.Module):
    """MobileSAM's image encoder (see the module docstring). ``image_size``: side of the square
    input (1024 for SAM); the output grid is ``image_size / 16``."""

    def __init__(self, image_size: int = 1024, stages=MOBILE_SAM_STAGES, classes: int = 1000):
        super().__init__()
        self.img_size = image_size  # the reference's name, read by SAM's post-processing
        side = image_size // 4
        self.grid = image_size // 16
        self.patch_embed = PatchEmbed(stages[0][0])
        self.layers = nn.ModuleList()
        for i, (channels, blocks, heads, window, stride) in enumerate(stages):
            size = (side, side)
            if heads:
                made = [TinyViTBlock(size, channels, heads, window) for _ in range(blocks)]
            else:
                made = [MBConv(channels) for _ in range(blocks)]
            downsample = None
            if i + 1 < len(stages):
                downsample = PatchMerging(size, channels, stages[i + 1][0], stride)
                side //= stride
            self.layers.append(Stage(made, downsample))
        last = stages[-1][0]
        self.norm_head = nn.LayerNorm(last)  # classifier of the published file, not run
        self.head = nn.Linear(last, classes)
        self.neck = nn.Sequential(
            nn.Conv2d(last, EMBEDDING_CHANNELS, 1, bias=False),
            LayerNorm2d(EMBEDDING_CHANNELS),
            nn.Conv2d(EMBEDDING_CHANNELS, EMBEDDING_CHANNELS, 3, padding=1, bias=False),
            LayerNorm2d(EMBEDDING_CHANNELS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, self.grid, self.grid)
        return self.neck(x)
