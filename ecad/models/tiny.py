"""Parts of the offline tiny pipelines: real diffusers and transformers classes, seeded random weights.

They exist so the whole product (hooks, search, metrics) runs and is tested on a machine with no
network and no GPU. Each family's adapter builds its own tiny pipeline from these parts (and names
it `ecad-tiny/...`); nothing about them is special-cased elsewhere.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

TINY_PREFIX = "ecad-tiny/"
TINY_VOCAB = 300  # 3 specials + 256 byte symbols, rounded up


def byte_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer needing no files: one token per UTF-8 byte, then </s>."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet())):  # alphabet() order varies per process
        vocab[ch] = i + 3
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def t5_encoder(
    seed: int,
    d_model: int = 32,
    cls=T5EncoderModel,
    config_cls=T5Config,
    vocab_size: int = TINY_VOCAB,
    d_kv: int = 8,
    d_ff: int = 64,
) -> torch.nn.Module:
    """A 2-layer random T5 encoder (frozen by its users), seeded: the tiny pipelines' and the
    shapes models' text encoder."""
    torch.manual_seed(seed)
    cfg = config_cls(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return cls(cfg).eval()


def clip_text_encoder(seed: int, projection_dim: int = 16, with_projection: bool = False) -> torch.nn.Module:
    """A 2-layer CLIP text encoder (hidden 16) on the byte vocabulary; `with_projection`: the
    CLIPTextModelWithProjection SD3 takes (its pooled output projected to `projection_dim`)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def amplify_blocks(
    transformer: torch.nn.Module, seed: int, std: float = 1.0, prefix: str = "transformer_blocks"
) -> None:
    """Re-draw the blocks' matrices with a large std: with default init a tiny random model barely
    moves the latents, so every schedule would score the same and a search would see no signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if p.ndim == 2 and prefix in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def kl_vae(seed: int, levels: int, latent_channels: int, **kw):
    """A tiny AutoencoderKL with `levels` resolution levels (2**(levels-1) pixels per latent cell)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=tuple(8 * 2**i for i in range(levels)),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
        **kw,
    ).eval()
