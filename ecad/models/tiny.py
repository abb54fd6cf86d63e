"""Offline tiny PixArt and FLUX pipelines: real diffusers classes, seeded random weights.

They exist so the whole product (hooks, search, metrics) runs and is tested on a machine
with no network and no GPU; nothing about them is special-cased elsewhere.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

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


def _t5(seed: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=TINY_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return T5EncoderModel(cfg).eval()


def _amplify_blocks(transformer: torch.nn.Module, seed: int, std: float = 1.0) -> None:
    """Re-draw the blocks' matrices with a large std: with default init a tiny random model barely
    moves the latents, so every schedule would score the same and a search would see no signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if p.ndim == 2 and "transformer_blocks" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _vae(seed: int, levels: int, latent_channels: int, **kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=tuple(8 * 2**i for i in range(levels)), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=latent_channels, norm_num_groups=8, layers_per_block=1, sample_size=32, **kw,
    ).eval()


def build_tiny_pixart(variant: str = "alpha", num_blocks: int = 4, seed: int = 0, text_length: int = 16):
    """A PixArt-alpha/sigma pipeline with `num_blocks` blocks, hidden size 16, 8x8 latents."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=num_blocks,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=32, norm_num_groups=1,
    ).eval()
    _amplify_blocks(transformer, seed, std=0.6)
    cls = PixArtAlphaPipeline if variant == "alpha" else PixArtSigmaPipeline
    return cls(
        tokenizer=byte_tokenizer(text_length), text_encoder=_t5(seed + 1), vae=_vae(seed + 2, 1, 4),
        transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    )


def build_tiny_flux(num_double: int = 2, num_single: int = 2, seed: int = 0, text_length: int = 16):
    """A FLUX pipeline (guidance-distilled like FLUX.1-dev) with 2+2 blocks, hidden size 16."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=num_double, num_single_layers=num_single, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
        guidance_embeds=True,
    ).eval()
    _amplify_blocks(transformer, seed, std=0.5)
    torch.manual_seed(seed + 3)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=TINY_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=0,
        )
    ).eval()
    vae = _vae(seed + 2, 2, 4, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=byte_tokenizer(77),
        text_encoder_2=_t5(seed + 1), tokenizer_2=byte_tokenizer(text_length), transformer=transformer,
    )


TINY_BUILDERS = {
    "ecad-tiny/pixart-alpha": lambda: build_tiny_pixart("alpha"),
    "ecad-tiny/pixart-sigma": lambda: build_tiny_pixart("sigma"),
    "ecad-tiny/flux": lambda: build_tiny_flux(),
}


def build_tiny(name: str):
    """The tiny pipeline named `ecad-tiny/...`, or an error listing the ones there are."""
    if name not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; available: {', '.join(sorted(TINY_BUILDERS))}")
    return TINY_BUILDERS[name]()
