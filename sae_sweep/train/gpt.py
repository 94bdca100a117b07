"""A nanoGPT-sized causal transformer, as a plain nn.Module.

The shape defaults are the note's: 6 layers, a 32-wide residual stream, 4 heads of 8 and an MLP of 4 x 32 = 128.
Each block's MLP post-activation is the named submodule ``transformer.h[i].mlp.act``, so harvesting can hook it.
A trained GPT is one folder (``write_gpt``/``load_gpt``): weights, config, tokenizer and the corpus it saw.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sae_sweep import rules
from sae_sweep.errors import ConfigError
from sae_sweep.store import MANIFEST, verify
from sae_sweep.train.tokenizer import TOKENIZER_FILE

GELU_VARIANTS = ("exact", "tanh")


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 256  # context length of the replication's model
    vocab_size: int = 4096  # set from the tokenizer; 4096 keeps the embedding small beside a 32-wide model
    n_layer: int = 6
    n_head: int = 4  # 4 heads of 32 / 4 = 8
    n_embd: int = 32  # residual stream width d_model
    mlp_ratio: int = 4  # MLP width 4 x 32 = 128: the harvested d_in
    bias: bool = False  # nanoGPT's bias-free variant: a little faster, no worse
    dropout: float = 0.0  # pretraining on a corpus this small does not overfit within the budget
    gelu: str = "exact"  # "exact" (erf, nanoGPT's nn.GELU()) or "tanh" (GPT-2's approximation)

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if self.gelu not in GELU_VARIANTS:
            raise ConfigError(f"model.gelu must be one of {GELU_VARIANTS}, got {self.gelu!r}")
        rules.enforce(rules.View({"model": self}), at="section")  # model.n_embd against model.n_head

    @property
    def d_mlp(self) -> int:
        """Width of each MLP hidden layer: the activation width d_in that SAEs are trained on."""
        return self.mlp_ratio * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.d_mlp, bias=cfg.bias)
        # A module of its own (not F.gelu) so a forward hook on it sees the (B, T, d_mlp) activations.
        self.act = nn.GELU(approximate="none" if cfg.gelu == "exact" else "tanh")
        self.c_proj = nn.Linear(cfg.d_mlp, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2 and nanoGPT
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def mlp_act(self, layer: int) -> nn.Module:
        """The post-GELU MLP activation module of ``layer``: hook it to read (B, T, d_mlp) activations."""
        if not 0 <= layer < self.config.n_layer:
            raise ConfigError(f"layer={layer} is outside the model: it has layers 0..{self.config.n_layer - 1}")
        return self.transformer.h[layer].mlp.act

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> logits (B, T, vocab); with targets, also the mean cross-entropy."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """nanoGPT's split: decay matrices and embeddings, never biases or LayerNorm gains."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]


# ------------------------------------------------------------------------------------------ the GPT's folder

MODEL_TYPE = "model"
WEIGHTS_FILE, MODEL_CONFIG_FILE, DATA_FILE = "model.safetensors", "config.json", "data.json"


def write_gpt(folder: Path, model: GPT, tokenizer_file: Path, data_meta: dict, train_info: dict) -> None:
    """Fill ``folder`` with a self-describing GPT: weights, config, tokenizer and the corpus it was trained on."""
    from safetensors.torch import save_model  # noqa: PLC0415

    save_model(model, str(folder / WEIGHTS_FILE))  # drops the tied lm_head copy; load_model restores it
    config = {"model": model.config.to_dict(), "train": train_info}
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(tokenizer_file, folder / TOKENIZER_FILE)
    (folder / DATA_FILE).write_text(json.dumps(data_meta, indent=2) + "\n")


@dataclass
class LoadedGPT:
    model: GPT  # in eval mode, on the CPU
    tokenizer: object  # BPETokenizer | GPT2Tokenizer
    config: dict  # config.json: {"model": GPTConfig fields, "train": how it was trained}
    data: dict  # the token cache's meta.json: corpus, key, token counts
    path: Path


def load_gpt(path: str | Path, verify_files: bool = True) -> LoadedGPT:
    """Load a GPT folder (a store version, or any folder ``write_gpt`` filled) onto the CPU."""
    from safetensors.torch import load_model  # noqa: PLC0415

    from sae_sweep.train.tokenizer import load_tokenizer  # noqa: PLC0415 - tokenizers loads only with a GPT

    path = Path(path)
    if verify_files and (path / MANIFEST).exists():
        verify(path)
    config = json.loads((path / MODEL_CONFIG_FILE).read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_model(model, str(path / WEIGHTS_FILE))
    model.eval()
    data = json.loads((path / DATA_FILE).read_text())
    return LoadedGPT(model, load_tokenizer(path / TOKENIZER_FILE), config, data, path)
