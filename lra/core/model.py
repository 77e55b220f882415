"""The shared encoder and classifier (docs/lra-reference.md, training setups: the Skyformer port).

    ids (B, I, N) -> token + learned position embeddings -> dropout
                  -> L x [x + drop(attn(LN(x), mask));  x + FFN(LN(x))]     (pre-LayerNorm)
                  -> LayerNorm -> mean over REAL tokens -> head

FFN: Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout. Head: Linear -> ReLU -> Linear.
One input (I = 1): the head sees the pooled vector u. Two inputs (I = 2, Retrieval): one shared
encoder embeds both documents and the head sees [u, v, u*v, u-v].

The encoder asks the attention registry for a token mixer by name and knows nothing else about it.
It hands every attention the task's layout (`grid`: the image's height and width when the tokens
are its pixels, None otherwise) the same way; when the sequence length is not that of the image
(a `--seq-len` override) the tokens no longer form the grid and the attention gets None.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import attentions
from lra.core.config import ModelConfig, RunConfig


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = attention
        self.drop = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_dim, cfg.dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.ffn(self.norm2(x))


class Encoder(nn.Module):
    """Token ids (B, N) and mask (B, N) -> contextual vectors (B, N, dim)."""

    def __init__(self, cfg: ModelConfig, attention: str, attention_options: dict, vocab_size: int, max_len: int,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        if grid is not None and grid[0] * grid[1] != max_len:
            grid = None  # the tokens are cut or padded: they no longer form the image
        self.cfg = cfg
        self.tokens = nn.Embedding(vocab_size, cfg.dim)
        self.positions = nn.Embedding(max_len, cfg.dim)
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg, attentions.build(attention, dim=cfg.dim, heads=cfg.heads, max_len=max_len, grid=grid,
                                        **attention_options))
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        N = ids.shape[1]
        if N > self.positions.num_embeddings:
            raise ValueError(f"sequence of {N} tokens is longer than the model's max_len {self.positions.num_embeddings}")
        x = self.drop(self.tokens(ids) + self.positions.weight[:N])
        for block in self.blocks:
            if self.cfg.grad_checkpoint and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return self.norm(x)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, N, D) over the positions where mask (B, N) is True."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class Classifier(nn.Module):
    """Encoder + mean pooling + MLP head, for one-input and two-input (dual encoder) tasks."""

    def __init__(self, cfg: ModelConfig, *, attention: str, attention_options: dict | None = None,
                 vocab_size: int, max_len: int, num_classes: int, num_inputs: int = 1,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        if num_inputs not in (1, 2):
            raise ValueError(f"num_inputs must be 1 or 2, got {num_inputs}")
        self.num_inputs = num_inputs
        self.encoder = Encoder(cfg, attention, attention_options or {}, vocab_size, max_len, grid)
        features = cfg.dim * (4 if num_inputs == 2 else 1)
        self.head = nn.Sequential(nn.Linear(features, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, num_classes))

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask (B, I, N) -> pooled (B, I, dim). Both inputs go through the encoder as one batch."""
        B, I, N = ids.shape
        h = self.encoder(ids.reshape(B * I, N), mask.reshape(B * I, N))
        return masked_mean(h, mask.reshape(B * I, N)).view(B, I, -1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 3 or ids.shape[1] != self.num_inputs:
            raise ValueError(f"expected ids of shape (B, {self.num_inputs}, N), got {tuple(ids.shape)}")
        p = self.pooled(ids, mask)
        if self.num_inputs == 1:
            features = p[:, 0]
        else:
            u, v = p[:, 0], p[:, 1]
            features = torch.cat([u, v, u * v, u - v], dim=-1)
        return self.head(features)

    def attention_info(self) -> dict:
        """How the attention layers run (their `info()`, the same for every layer), for the record."""
        info = getattr(self.encoder.blocks[0].attn, "info", None)
        return dict(info()) if callable(info) else {}

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of the auxiliary losses the attention layers set in the last forward, if any."""
        losses = [b.attn.aux_loss for b in self.encoder.blocks if getattr(b.attn, "aux_loss", None) is not None]
        return torch.stack([l.float() for l in losses]).sum() if losses else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(cfg: RunConfig, task) -> Classifier:
    """The paper model of a run for a task: its attention, vocabulary, length, classes, inputs and
    layout. Every command builds its model here."""
    return Classifier(cfg.model, attention=cfg.attention, attention_options=cfg.attention_options,
                      vocab_size=task.vocab_size, max_len=cfg.data.seq_len, num_classes=task.num_classes,
                      num_inputs=task.num_inputs, grid=task.grid)
