"""Plain Vision Transformers for the benchmarks (paddle.vision has none; PaddleClas is
not a dependency): patch embedding, class token, position embedding, pre-norm blocks
of multi-head self-attention and a GELU MLP, a LayerNorm and a linear head. The
attention splits ``qkv`` by ``C // self.num_heads`` (C read from the input), as
PaddleClas' ViT does.

    >>> net = vit("tiny-test")
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

# name: (embedding width, depth, heads, MLP width)
SIZES = {
    "tiny-test": (32, 2, 2, 64),
    "ViT-S": (384, 12, 6, 1536),
    "ViT-B": (768, 12, 12, 3072),
    "ViT-L": (1024, 24, 16, 4096),
    "EVA-giant": (1408, 40, 16, 6144),
}


class Attention(nn.Layer):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape([-1, n, 3, self.num_heads, c // self.num_heads])
        qkv = qkv.transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(q.matmul(k, transpose_y=True) * self.scale, axis=-1)
        return self.proj(attn.matmul(v).transpose([0, 2, 1, 3]).reshape([-1, n, c]))


class Block(nn.Layer):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, epsilon=1e-6), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Layer):
    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int = 224,
                 patch: int = 16, classes: int = 1000):
        super().__init__()
        self.patch_embed = nn.Conv2D(3, dim, patch, stride=patch)
        self.cls_token = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.Constant(0.0))
        self.pos_embed = self.create_parameter([1, (image // patch) ** 2 + 1, dim])
        self.blocks = nn.LayerList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose([0, 2, 1])
        x = paddle.concat([self.cls_token.expand([x.shape[0], -1, -1]), x], axis=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit(name: str, image: int = 224) -> VisionTransformer:
    """One of :data:`SIZES` for ``image`` x ``image`` inputs."""
    dim, depth, heads, hidden = SIZES[name]
    return VisionTransformer(dim, depth, heads, hidden, image=image)
