"""Train the offline shapes models: `python -m ecad.models.train_shapes [--model NAME|all]`.

What it makes, under `--out` (default: the shipped `shapes_models/`), one `--model` at a time or all in order:

- `checkpoints/vae/final/`: the shared VAE, trained end to end; `checkpoints/decoder/final/`: the
  same VAE after a decoder-only fine-tune (encoder frozen, so the latents do not change), which
  the pipelines get;
- `shapes-classifier/`: the shapes metrics' CNN (ecad/metrics/shapes.py), config.json + safetensors;
- `shapes-pixart/`: a PixArtAlphaPipeline (save_pretrained): the shared VAE, a frozen random T5
  encoder on a word-level tokenizer, a 6-block PixArtTransformer2DModel trained with DDPM
  v-prediction and 10% caption dropout (so classifier-free guidance works), DPM-Solver scheduler;
- `shapes-flux/`: a FluxPipeline: the same VAE (with a shift factor), frozen random CLIP + T5
  encoders on the word tokenizer, a FluxTransformer2DModel (2 double + 4 single blocks) trained
  with the rectified-flow loss, flow-matching Euler scheduler. Not guidance-distilled
  (guidance_embeds=False): FLUX.1-schnell's layout, conditional sampling only.

Everything is float32 on the CPU and seeded: each step's batch and noise come from (seed, step),
so a resumed run (`--resume`) continues exactly. Checkpoints are `checkpoints/<model>/state.safetensors`
(model and AdamW state) + `state.json` (step, loss history), written every `--save-every` steps;
no pickle anywhere. The VAE is trained first, because both pipelines train on its latents.
`--init DIR` continues the pipelines saved under DIR (e.g. the shipped ones) instead of starting
from random weights.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecad.errors import EcadError
from ecad.models import shapes as data

MODELS = ("vae", "decoder", "classifier", "pixart", "flux")
PIXART_DIR, FLUX_DIR = "shapes-pixart", "shapes-flux"
TEXT_LENGTH = 16  # tokens per caption (the spaces' text_length); captions are 12 words + </s>
POOL_SIZE = 20000  # pre-rendered training pictures (about 8 per training caption)
DEFAULT_STEPS = {"vae": 2000, "decoder": 3000, "classifier": 1500, "pixart": 24000, "flux": 16000}


class StopTraining(Exception):
    """--stop-at reached: the run ends here, its checkpoint written, to be continued with --resume."""


class TrainError(EcadError, RuntimeError):
    """A training run cannot start or resume (missing VAE, damaged checkpoint); the message says the fix."""


# ------------------------------------------------------------------ text side (no files needed)
def word_tokenizer(max_length: int = TEXT_LENGTH):
    """One token per word of the shapes grammar, then </s>: the text encoders see each attribute
    as its own token. Unknown words map to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for a in data.all_attributes() for w in a.caption.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def t5_encoder(seed: int, vocab: int, d_model: int = 64):
    """The shapes pipelines' frozen random T5 (ecad.models.tiny's, wider, on the word vocabulary)."""
    from ecad.models.tiny import t5_encoder as random_t5

    return random_t5(seed, d_model=d_model, vocab_size=vocab, d_kv=16, d_ff=128)


def clip_encoder(seed: int, vocab: int, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TEXT_LENGTH,
        projection_dim=hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    )
    return CLIPTextModel(cfg).eval()


def build_vae(seed: int):
    """3 levels (4x downsampling): 32x32 px pictures <-> 8x8x4 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=data.IMAGE_SIZE,
    )


def build_pixart_transformer(seed: int, caption_channels: int):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=4,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,  # no learned sigma: the pipeline uses the whole output when out_channels != 2 x latent
        num_layers=6,
        cross_attention_dim=64,
        sample_size=data.IMAGE_SIZE // 4,
        patch_size=2,
        caption_channels=caption_channels,
        norm_num_groups=1,
    )


def build_flux_transformer(seed: int, joint_dim: int, pooled_dim: int):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x the pipeline's 2x2 packing
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=joint_dim,
        pooled_projection_dim=pooled_dim,
        axes_dims_rope=(4, 6, 6),
        guidance_embeds=False,
    )


# ------------------------------------------------------------------ checkpoints (safetensors + JSON)
@dataclass
class Checkpoint:
    """A model's training state on disk: `state.safetensors` (model + AdamW tensors) and `state.json`."""

    directory: Path

    @property
    def tensors(self) -> Path:
        return self.directory / "state.safetensors"

    @property
    def meta(self) -> Path:
        return self.directory / "state.json"

    def exists(self) -> bool:
        return self.tensors.is_file() and self.meta.is_file()

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> None:
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        opt = optimizer.state_dict()
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tmp_t, tmp_m = self.directory / "state.safetensors.tmp", self.directory / "state.json.tmp"
        save_file(tensors, str(tmp_t))
        tmp_m.write_text(json.dumps({**meta, "param_groups": opt["param_groups"]}, indent=1) + "\n")
        tmp_t.replace(self.tensors)
        tmp_m.replace(self.meta)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(self.tensors))
            meta = json.loads(self.meta.read_text())
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = value
            optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise TrainError(
                f"{self.directory}: damaged training checkpoint ({exc}); delete it to start that model again"
            ) from exc
        return meta


def train_loop(
    name: str,
    model: nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    out: Path,
    args: argparse.Namespace,
    lr: float,
    log: Callable[[str], None],
) -> list[list[float]]:
    """AdamW with warm-up and cosine decay; `loss_at(step)` draws that step's batch from (seed, step).
    Returns the loss history as [step, mean loss over the last interval] rows. With `args.stop_at`
    it stops after that step (checkpoint written), as if interrupted, by raising StopTraining."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = min(200, max(1, steps // 10))

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    ckpt = Checkpoint(out / "checkpoints" / name)
    start, history = 0, []
    if ckpt.exists():
        if not args.resume:
            raise TrainError(
                f"{ckpt.directory} holds a checkpoint of {name}; pass --resume to continue it, "
                "or delete it to start again"
            )
        meta = ckpt.load(model, optimizer)
        start, history = int(meta["step"]), meta["history"]
        log(f"{name}: resumed at step {start}")
    model.train()
    t0, window = time.perf_counter(), []
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * rate(step)
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        window.append(float(loss.detach()))
        done = step + 1
        if done % 50 == 0 or done == steps:
            history.append([done, float(np.mean(window))])
            window = []
            rate_s = (time.perf_counter() - t0) / (done - start)
            log(f"{name}: step {done}/{steps} loss {history[-1][1]:.5f} ({rate_s * 1000:.0f} ms/step)")
        if done % args.save_every == 0 or done == steps or done == args.stop_at:
            ckpt.save(model, optimizer, {"model": name, "step": done, "steps": steps, "history": history})
        if done == args.stop_at:
            log(f"{name}: stopped after step {done} (--stop-at); continue with --resume")
            raise StopTraining
    model.eval()
    return history


# ------------------------------------------------------------------ data helpers
def caption_index(pool: data.ShapesBatch) -> tuple[list[str], torch.Tensor]:
    """The pool's distinct captions (sorted: each is encoded once) and each picture's index into them."""
    captions = sorted({a.caption for a in pool.attributes})
    index = {c: i for i, c in enumerate(captions)}
    return captions, torch.tensor([index[a.caption] for a in pool.attributes])


def training_pool(args, offset: int = 0, split: data.Split = "train") -> data.ShapesBatch:
    return data.sample(args.pool, split, seed=args.seed + offset)


def step_rng(seed: int, step: int, stream: int) -> tuple[np.random.Generator, torch.Generator]:
    return np.random.default_rng([seed, step, stream]), torch.Generator().manual_seed(
        (seed * 1_000_003 + step) * 16 + stream
    )


# ------------------------------------------------------------------ the VAE's shared pieces
def posterior_moments(vae, pictures: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's posterior mean and std of `pictures` ([0, 1]), encoded `batch` at a time."""
    with torch.no_grad():
        dists = [vae.encode(pictures[i : i + batch] * 2 - 1).latent_dist for i in range(0, len(pictures), batch)]
    return torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE in [-1, 1] pixels: the VAE's and the decoder fine-tune's objective."""
    return (rec - target).abs().mean() + ((rec - target) ** 2).mean()


def reconstruction_psnr(vae, pictures: torch.Tensor) -> float:
    """PSNR (dB) of the VAE's reconstructions of `pictures` ([0, 1]) from their latent means."""
    with torch.no_grad():
        rec = vae.decode(posterior_moments(vae, pictures)[0]).sample.add(1).div(2).clamp(0, 1)
    return float(-10 * torch.log10(((rec - pictures) ** 2).mean()))


def require_vae(directory: Path) -> Path:
    if not (directory / "config.json").is_file():
        raise TrainError(f"{directory}: no trained VAE; run `python -m ecad.models.train_shapes --model vae` first")
    return directory


# ------------------------------------------------------------------ the models
def train_vae(args, log) -> Path:
    """L1 + MSE reconstruction with a small KL term; scaling/shift factors from the latents' statistics."""
    vae = build_vae(args.seed)
    pool = training_pool(args, 0, "all").tensor()

    def loss_at(step: int) -> torch.Tensor:
        rng, gen = step_rng(args.seed, step, 0)
        x = pool[rng.integers(0, len(pool), size=args.batch)]
        posterior = vae.encode(x * 2 - 1).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        return reconstruction_loss(vae.decode(z).sample, x * 2 - 1) + 1e-6 * posterior.kl().mean()

    history = train_loop("vae", vae, loss_at, args.steps or DEFAULT_STEPS["vae"], args.out, args, args.lr or 1e-3, log)
    z = posterior_moments(vae, pool[:4000])[0]
    shift, scale = float(z.mean()), float(1 / z.std())
    psnr = reconstruction_psnr(vae, pool[:500])
    vae.register_to_config(scaling_factor=scale, shift_factor=shift)
    final = args.out / "checkpoints" / "vae" / "final"
    vae.save_pretrained(final, safe_serialization=True)
    record(args.out, "vae", {"history": history, "scaling_factor": scale, "shift_factor": shift, "psnr_db": psnr})
    log(f"vae: saved {final} (scaling {scale:.4f}, shift {shift:.4f}, reconstruction PSNR {psnr:.1f} dB)")
    return final


def trained_vae_dir(out: Path) -> Path:
    """The VAE the pipelines get: the decoder fine-tune's if that step ran, else the VAE step's
    (the two share their encoder, so either gives the latents the transformers train on)."""
    tuned = out / "checkpoints" / "decoder" / "final"
    return tuned if (tuned / "config.json").is_file() else out / "checkpoints" / "vae" / "final"


def load_trained_vae(out: Path, shift: bool):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(require_vae(trained_vae_dir(out))).eval().requires_grad_(False)
    if not shift:  # PixArt's pipeline decodes latents / scaling_factor without a shift
        vae.register_to_config(shift_factor=None)
    return vae


def train_decoder(args, log) -> Path:
    """Fine-tune the trained VAE's decoder with its encoder frozen. Small shapes blur into each
    other in the joint run's reconstructions (the classifier read the shape right on 79% of them
    against 95% of the pictures themselves), and that caps every pipeline's shapes-score; the
    decoder is most of the VAE's cost and its loss was still falling. With the encoder frozen the
    latents do not change, so the pipelines' transformers can train in parallel with this step."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(require_vae(args.out / "checkpoints" / "vae" / "final"))
    vae.requires_grad_(False)
    for part in (vae.decoder, vae.post_quant_conv):
        part.requires_grad_(True)
    pool = training_pool(args, 0, "all").tensor()
    mean, std = posterior_moments(vae, pool)  # the frozen encoder's, once
    before = reconstruction_psnr(vae, pool[:500])

    def loss_at(step: int) -> torch.Tensor:
        rng, gen = step_rng(args.seed, step, 4)
        idx = torch.from_numpy(rng.integers(0, len(pool), size=args.batch))
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        return reconstruction_loss(vae.decode(z).sample, pool[idx] * 2 - 1)

    steps = args.steps or DEFAULT_STEPS["decoder"]
    history = train_loop("decoder", vae, loss_at, steps, args.out, args, args.lr or 3e-4, log)
    vae.requires_grad_(False)
    after = reconstruction_psnr(vae, pool[:500])
    final = args.out / "checkpoints" / "decoder" / "final"
    vae.save_pretrained(final, safe_serialization=True)
    record(args.out, "decoder", {"history": history, "psnr_db_before": before, "psnr_db": after})
    log(f"decoder: saved {final} (reconstruction PSNR {before:.1f} -> {after:.1f} dB)")
    return final


def train_classifier(args, log) -> Path:
    """Cross-entropy on all five heads; pictures from every caption, with pixel noise and a slight
    blur now and then so generated (imperfect) pictures are read like the data set's."""
    from ecad.metrics.shapes import CLASSIFIER_DIR, ShapesClassifier, attribute_probabilities, save_classifier

    torch.manual_seed(args.seed)
    model = ShapesClassifier()
    pool = training_pool(args, 1, "all")
    images, labels = pool.tensor(), {k: torch.from_numpy(v) for k, v in pool.labels.items()}

    def loss_at(step: int) -> torch.Tensor:
        rng, gen = step_rng(args.seed, step, 1)
        idx = torch.from_numpy(rng.integers(0, len(images), size=args.batch))
        x = images[idx]
        x = x + torch.randn(x.shape, generator=gen) * torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 0.1
        if rng.random() < 0.3:
            x = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        logits = model(x.clamp(0, 1))
        return sum(nn.functional.cross_entropy(lg, labels[k][idx]) for k, lg in logits.items())

    steps = args.steps or DEFAULT_STEPS["classifier"]
    history = train_loop("classifier", model, loss_at, steps, args.out, args, args.lr or 2e-3, log)
    test = data.sample(min(1000, args.pool), "held-out", seed=args.seed + 99)
    with torch.no_grad():
        probs = attribute_probabilities(model, test.tensor(), test.attributes)
    accuracy = {k[: -len("_correct")]: float(v.mean()) for k, v in probs.items() if k.endswith("_correct")}
    target = save_classifier(model, args.out / CLASSIFIER_DIR)
    record(args.out, "classifier", {"history": history, "held_out_accuracy": accuracy})
    log(f"classifier: saved {target}; held-out accuracy {accuracy}")
    return target


def init_pipeline(args, directory: str, pipeline_class):
    """`--init DIR`: the pipeline saved under DIR/<directory> (e.g. the shipped one), whose
    transformer training continues (a fresh optimizer and learning-rate schedule) and whose VAE and
    frozen text encoders are kept as they are, so the latents it trains on are the ones it decodes."""
    source = args.init / directory
    if not (source / "model_index.json").is_file():
        raise TrainError(
            f"--init {args.init}: no {directory}/ pipeline there (no model_index.json); "
            "pass the directory that holds shapes-pixart/ and shapes-flux/ (the shipped shapes_models/)"
        )
    return pipeline_class.from_pretrained(source, torch_dtype=torch.float32)


def pixart_pipeline(args):
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    if args.init is not None:
        return init_pipeline(args, PIXART_DIR, PixArtAlphaPipeline)
    tokenizer = word_tokenizer()
    text_encoder = t5_encoder(args.seed + 11, len(tokenizer))
    return PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=load_trained_vae(args.out, shift=False),
        transformer=build_pixart_transformer(args.seed + 12, text_encoder.config.d_model),
        scheduler=DPMSolverMultistepScheduler(prediction_type="v_prediction"),
    )


def encoded_latents(vae, pool: data.ShapesBatch, shift: bool) -> torch.Tensor:
    """The pool's latent means, scaled (and shifted) as the pipelines expect their latents."""
    z = posterior_moments(vae, pool.tensor())[0]
    if shift:
        z = z - vae.config.shift_factor
    return z * vae.config.scaling_factor


def train_pixart(args, log) -> Path:
    """DDPM v-prediction on the VAE's latents (the DPM-Solver scheduler's training betas; the
    scheduler is saved with prediction_type="v_prediction"), 10% of captions replaced by the empty
    caption's encoding (what CFG's unconditional row gets). Epsilon prediction trained here for 3000
    steps ignored its captions: on 8x8 latents the noise target barely depends on the picture where
    the input does not already show it, so nothing rewarded reading the caption; v's target holds
    the clean latents at every noise level (as the flow-matching target of the FLUX model does)."""
    pipe = pixart_pipeline(args)
    transformer, scheduler = pipe.transformer, pipe.scheduler
    pool = training_pool(args)
    latents = encoded_latents(pipe.vae, pool, shift=False)
    captions, cap_idx = caption_index(pool)
    with torch.no_grad():
        pe, pm, ne, nm = pipe.encode_prompt(
            captions, do_classifier_free_guidance=True, negative_prompt="", device="cpu",
            clean_caption=False, max_sequence_length=TEXT_LENGTH,
        )  # fmt: skip
    alphas = scheduler.alphas_cumprod.float()
    transformer.requires_grad_(True)

    def loss_at(step: int) -> torch.Tensor:
        rng, gen = step_rng(args.seed, step, 2)
        idx = torch.from_numpy(rng.integers(0, len(latents), size=args.batch))
        x0, ci = latents[idx], cap_idx[idx]
        emb, mask = pe[ci].clone(), pm[ci].clone()
        drop = torch.from_numpy(rng.random(args.batch) < 0.1)
        emb[drop], mask[drop] = ne[:1].expand(int(drop.sum()), -1, -1), nm[:1].expand(int(drop.sum()), -1)
        t = torch.randint(0, len(alphas), (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = transformer(
            xt, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False,
        )[0]  # fmt: skip
        v = a.sqrt() * noise - (1 - a).sqrt() * x0
        return ((pred - v) ** 2).mean()

    return train_and_save("pixart", pipe, transformer, loss_at, PIXART_DIR, args, log)


def flux_pipeline(args):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    if args.init is not None:
        return init_pipeline(args, FLUX_DIR, FluxPipeline)
    tokenizer = word_tokenizer()
    clip = clip_encoder(args.seed + 21, len(tokenizer))
    t5 = t5_encoder(args.seed + 22, len(tokenizer))
    return FluxPipeline(
        # shift 3 (SD3's; FLUX.1-dev's dynamic shift is about that at 1024 px) spends more of the 28
        # steps at high noise, where the shape is laid out: shapes-score 0.829 against 0.814 at shift 1
        # on 280 training captions (shift 2: 0.822). Inference only: training samples s uniformly.
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=load_trained_vae(args.out, shift=True),
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=word_tokenizer(),
        transformer=build_flux_transformer(args.seed + 23, t5.config.d_model, clip.config.hidden_size),
    )


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H/2 * W/2, 4C]: FluxPipeline's 2x2 packing of latents into tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def image_ids(h: int, w: int) -> torch.Tensor:
    """FluxPipeline's position ids of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def train_flux(args, log) -> Path:
    """Rectified flow: x_t = (1 - s) x0 + s noise, the transformer predicts noise - x0 (what
    FlowMatchEulerDiscreteScheduler integrates); s uniform, timestep = s as FluxPipeline passes it."""
    pipe = flux_pipeline(args)
    transformer = pipe.transformer
    pool = training_pool(args)
    latents = encoded_latents(pipe.vae, pool, shift=True)
    captions, cap_idx = caption_index(pool)
    with torch.no_grad():
        pe, pooled, text_ids = pipe.encode_prompt(
            prompt=captions, prompt_2=None, device="cpu", max_sequence_length=TEXT_LENGTH
        )
    img_ids = image_ids(*latents.shape[-2:])
    transformer.requires_grad_(True)

    def loss_at(step: int) -> torch.Tensor:
        rng, gen = step_rng(args.seed, step, 3)
        idx = torch.from_numpy(rng.integers(0, len(latents), size=args.batch))
        x0, ci = pack(latents[idx]), cap_idx[idx]
        s = torch.rand(args.batch, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - s.view(-1, 1, 1)) * x0 + s.view(-1, 1, 1) * noise
        pred = transformer(
            hidden_states=xt, timestep=s, guidance=None, pooled_projections=pooled[ci],
            encoder_hidden_states=pe[ci], txt_ids=text_ids, img_ids=img_ids, return_dict=False,
        )[0]  # fmt: skip
        return ((pred - (noise - x0)) ** 2).mean()

    return train_and_save("flux", pipe, transformer, loss_at, FLUX_DIR, args, log)


def train_and_save(name: str, pipe, transformer, loss_at, directory: str, args, log) -> Path:
    """Train a pipeline's transformer (the rest is frozen) and save the whole pipeline."""
    history = train_loop(
        name, transformer, loss_at, args.steps or DEFAULT_STEPS[name], args.out, args, args.lr or 5e-4, log
    )
    transformer.requires_grad_(False)
    target = args.out / directory
    if target.exists():
        shutil.rmtree(target)
    pipe.save_pretrained(target, safe_serialization=True)
    info: dict = {"history": history}
    if args.init is not None:  # what the continued run started from, so training.json tells the whole story
        earlier = args.init / "training.json"
        runs = json.loads(earlier.read_text()) if earlier.is_file() else {}
        info["continued_from"] = {"pipeline": str(args.init / directory), **runs.get(name, {})}
    record(args.out, name, info)
    log(f"{name}: saved {target}")
    return target


def record(out: Path, model: str, info: dict) -> None:
    """training.json beside the shipped models: what each model's run measured (loss history etc.)."""
    path = out / "training.json"
    runs = json.loads(path.read_text()) if path.is_file() else {}
    runs[model] = info
    path.write_text(json.dumps(runs, indent=1) + "\n")


TRAINERS = {
    "vae": train_vae,
    "decoder": train_decoder,
    "classifier": train_classifier,
    "pixart": train_pixart,
    "flux": train_flux,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ecad.resources import shapes_models_dir

    p = argparse.ArgumentParser(prog="python -m ecad.models.train_shapes", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=(*MODELS, "all"), default="all")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the shipped shapes_models/)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default: per model)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (more than the free cores is much slower)")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--pool", type=int, default=POOL_SIZE, help="pre-rendered training pictures")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue training the pipelines saved under DIR (e.g. the shipped shapes_models/) instead of "
        "starting from random weights (pixart and flux only)",
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per model)")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (checkpoint written)")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.batch < 2 or args.pool < 2 or args.threads < 1 or args.save_every < 1:
        p.error("--batch and --pool must be >= 2, --threads and --save-every >= 1")
    if args.init is not None and args.model not in ("pixart", "flux"):
        p.error(f"--init continues the pipelines' training: pass --model pixart or --model flux, not {args.model}")
    if args.lr is not None and args.lr <= 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    args.out = args.out if args.out is not None else shapes_models_dir()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for name in MODELS if args.model == "all" else (args.model,):
            TRAINERS[name](args, log)
    except EcadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StopTraining:
        return 0
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
