"""Do the trained shapes models behave like trained text-to-image DiTs? (issue 16, item 4)

1. Caption adherence at no caching: each shapes space renders held-out captions (attribute
   combinations its training never saw) and training captions, one seed each, through ecad's
   Renderer (the search's own path). Reported: shapes-score (mean product of the classifier's
   five attribute probabilities), per-attribute classifier accuracy, dominant-colour accuracy
   read off the pixels without any model (`ecad.models.shapes.dominant_colours`: shape colour and
   background colour both right), and shapes-fid against held-out data-set pictures. The data
   set's own pictures of the same captions give the ceiling of each number.
2. Adjacent-step similarity of block outputs: forward hooks on every transformer block record,
   per denoising step, the block's output and its update (output - input: what a cached component
   stands in for); per prompt, the cosine between adjacent steps' tensors, averaged over steps;
   reported per block as the median over prompts. Trained shapes model vs the random tiny model
   of the same family at the same step count. Published caching work (DeepCache, FORA, Delta-DiT,
   ToCa, Learning-to-Cache) rests on the observation that trained DiTs' block features change
   little between adjacent steps; a random model gives no reason to expect that.

    python benchmarks/bench_shapes.py --out benchmarks/results/shapes_cpu.json   # writes .json and .md
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_io import shapes_models_id, write_result  # noqa: E402

from ecad.generation import Renderer  # noqa: E402
from ecad.metrics import get_metric  # noqa: E402
from ecad.models import shapes as data  # noqa: E402
from ecad.spaces import load_space  # noqa: E402

PAIRS = {"shapes-pixart": "tiny-pixart", "shapes-flux": "tiny-flux"}


def prompts_of(split: str, n: int, seed: int) -> list[str]:
    """`n` distinct captions of a split (a seeded choice, sorted)."""
    pool = data.split_attributes(split)
    pick = np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i].caption for i in sorted(pick)]


def adherence(space_name: str, prompts: list[str], seed: int, score, fid) -> dict:
    renderer = Renderer(load_space(space_name), prompts, device="cpu")
    t0 = time.perf_counter()
    images = renderer.render(renderer.items([seed]), batch_size=25).images
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), **judge(images, prompts, score, fid)}


def judge(images_u8: torch.Tensor, prompts: list[str], score, fid) -> dict:
    result = score.score(images_u8, prompts)
    hw = images_u8.permute(0, 2, 3, 1).cpu().numpy()
    colours = [data.dominant_colours(im) for im in hw]
    wanted = [data.parse_caption(p) for p in prompts]
    shape_colour = np.mean([c[0] == a.colour for c, a in zip(colours, wanted)])
    both = np.mean([c == (a.colour, a.background) for c, a in zip(colours, wanted)])
    return {
        "images": len(prompts),
        "shapes_score": round(result.summary, 4),
        "accuracy": {k[:-8]: round(float(np.mean(v)), 4) for k, v in result.extras.items() if k.endswith("_correct")},
        "dominant_colour_accuracy": round(float(both), 4),
        "shape_colour_accuracy": round(float(shape_colour), 4),
        "shapes_fid": round(fid.score(images_u8).summary, 3),
    }


def block_similarity(space_name: str, prompts: list[str], seed: int, steps: int | None) -> dict:
    """Per block: median over prompts of the mean adjacent-step cosine of its output and update."""
    space = load_space(space_name)
    if steps is not None:
        space = dataclasses.replace(space, steps=steps)
    renderer = Renderer(space, prompts, device="cpu")
    pipe = renderer.pipe
    groups = [g.name for g in space.layout.groups]
    blocks = [(f"{g}.{i}", b) for g in groups for i, b in enumerate(getattr(pipe.transformer, g))]
    record: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name, _ in blocks}
    handles = []
    image_index = renderer.adapter.image_output_index

    def hook(name):
        def fn(module, args, kwargs, output):
            x = kwargs.get("hidden_states", args[0] if args else None)
            out = output if image_index is None else output[image_index]
            record[name].append((out.detach().float().clone(), (out - x).detach().float().clone()))

        return fn

    for name, block in blocks:
        handles.append(block.register_forward_hook(hook(name), with_kwargs=True))
    try:
        per_prompt: dict[str, dict[str, list[float]]] = {name: {"output": [], "update": []} for name, _ in blocks}
        for p in range(len(prompts)):
            for name in record:
                record[name].clear()
            renderer.images([(p, seed)])
            for name, seq in record.items():
                for kind, k in (("output", 0), ("update", 1)):
                    cos = [
                        float(torch.nn.functional.cosine_similarity(a[k].reshape(-1), b[k].reshape(-1), dim=0))
                        for a, b in zip(seq[:-1], seq[1:])
                    ]
                    per_prompt[name][kind].append(float(np.mean(cos)))
    finally:
        for h in handles:
            h.remove()
    return {
        "steps": space.steps,
        "prompts": len(prompts),
        "blocks": {
            name: {kind: round(float(np.median(v)), 4) for kind, v in kinds.items()}
            for name, kinds in per_prompt.items()
        },
    }


def markdown(result: dict) -> str:
    lines = [
        "# Shapes models: caption adherence and adjacent-step similarity",
        "",
        f"{result['machine']}; torch {result['torch']}; prompts: {result['adherence_prompts']} per split, "
        f"seed {result['seed']}; similarity: {result['similarity_prompts']} held-out prompts.",
        "",
        "## Caption adherence at no caching",
        "",
        "| model | captions | shapes-score | shape | colour | background | size | position "
        "| dominant colours | shapes-fid |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for space, splits in result["adherence"].items():
        for split, r in splits.items():
            a = r["accuracy"]
            lines.append(
                f"| {space} | {split} | {r['shapes_score']:.3f} | {a['shape']:.2f} | {a['colour']:.2f} | "
                f"{a['background']:.2f} | {a['size']:.2f} | {a['position']:.2f} | "
                f"{r['dominant_colour_accuracy']:.2f} | {r['shapes_fid']:.2f} |"
            )
    lines += [
        "",
        "shapes-score: mean over images of the product of the classifier's probabilities of the five attributes "
        "the caption names; shape..position: classifier top-1 accuracy; dominant colours: shape and background "
        "colour read off the pixels (no model) both right; shapes-fid vs held-out data-set pictures. "
        "`data set` rows: the data set's own pictures of the same captions (the ceiling).",
        "",
        "## Adjacent-step cosine similarity of block outputs (median over prompts of the mean over steps)",
        "",
    ]
    for space, models in result["similarity"].items():
        names = list(next(iter(models.values()))["blocks"])
        lines += [
            f"### {space} vs {PAIRS[space]} ({next(iter(models.values()))['steps']} steps)",
            "",
            "| block | " + " | ".join(f"{m} output | {m} update" for m in models) + " |",
            "|---|" + "---|---|" * len(models),
        ]
        for name in names:
            cells = []
            for m in models.values():
                b = m["blocks"].get(name)
                cells += ["-", "-"] if b is None else [f"{b['output']:.3f}", f"{b['update']:.3f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "output: the block's output (the residual stream after it); update: output - input, what the block adds "
        "(what a cached component stands in for). The random tiny model has fewer blocks: '-' where it has none.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spaces", default="shapes-pixart,shapes-flux")
    p.add_argument("--prompts", type=int, default=280, help="captions per split for adherence")
    p.add_argument("--similarity-prompts", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON path (a .md beside it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    score, fid = get_metric("shapes-score"), get_metric("shapes-fid")
    spaces = [s for s in args.spaces.split(",") if s]
    result: dict = {
        "machine": f"{platform.machine()} CPU, {args.threads} thread(s)",
        "torch": torch.__version__,
        "shapes_models": shapes_models_id(),
        "seed": args.seed,
        "adherence_prompts": args.prompts,
        "similarity_prompts": args.similarity_prompts,
        "adherence": {},
        "similarity": {},
    }
    splits = {s: prompts_of(s, args.prompts, args.seed) for s in ("held-out", "train")}
    for split, prompts in splits.items():
        rng = np.random.default_rng([args.seed, 7])
        attrs = [data.parse_caption(c) for c in prompts]
        truth = data.ShapesBatch(  # the data set's own pictures of exactly these captions
            np.stack([data.render(a, rng) for a in attrs]), attrs
        )
        u8 = torch.from_numpy(truth.images).permute(0, 3, 1, 2).contiguous()
        result["adherence"].setdefault("data set", {})[split] = judge(u8, prompts, score, fid)
    for space in spaces:
        result["adherence"][space] = {
            split: adherence(space, ps, args.seed, score, fid) for split, ps in splits.items()
        }
        print(space, result["adherence"][space], flush=True)
    sim_prompts = splits["held-out"][: args.similarity_prompts]
    for space in spaces:
        trained = block_similarity(space, sim_prompts, args.seed, None)
        random_tiny = block_similarity(PAIRS[space], sim_prompts, args.seed, trained["steps"])
        result["similarity"][space] = {space: trained, PAIRS[space]: random_tiny}
    write_result(result, args.out)
    if args.out:
        args.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
