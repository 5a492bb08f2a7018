"""ImageReward: refbench's port (transformers' BLIP classes) against the ``image-reward`` package's own code.

The package cannot live in refbench's environment (it needs transformers < 4.56), so the check
runs in two environments, on the same files:

1. ``original`` (run with a throw-away environment's python that has ``image-reward``,
   ``transformers<4.56``, ``setuptools<81`` and ``openai-clip``; refbench is not imported):
   builds the package's ``ImageReward`` at full size (ViT-L/16, BERT-base with cross-attention,
   the MLP head) from a local ``med_config.json`` and a local BERT tokenizer (a small
   ``vocab.txt`` written here: the package would download ``bert-base-uncased``), gives every
   parameter random values (seeded; biases and LayerNorms too, and a head scaled so that the
   scores spread over a few units instead of all sitting at -mean/std), saves the state dict as
   ``ImageReward.pt``, loads it back with the package's ``ImageReward.load`` and scores 8
   images (PNG, 4 sizes, so resizing and cropping count) against 8 prompts (one longer than 35
   tokens, words split into word pieces, an unknown character) with ``model.score``.
2. ``refbench`` (refbench's environment): loads the same folder as ``imagereward=FOLDER`` through
   the metric registry, exactly as ``refbench score`` does, scores the same images and prompts,
   and compares (one image per call, and two per call). Passes when every |difference| <= 1e-4, the token ids are equal, and a negative
   control (the port with two of the ViT's LayerNorms swapped) differs by more than 1e-4 on every image.

Usage (from the repository root, refbench's python):
    python benchmarks/imagereward_equivalence.py --original-python /tmp/ir-env/bin/python \
        --work /tmp/ir-check [--out benchmarks/imagereward_equivalence.json]
The throw-away environment: ``python3 -m venv /tmp/ir-env && /tmp/ir-env/bin/pip install
torch==2.14.1 torchvision==0.29.1 && /tmp/ir-env/bin/pip install image-reward "transformers<4.56"
"setuptools<81" openai-clip``. Needs about 6 GB of memory and 2 GB of disk; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 1e-4
SEED = 0
SIZES = [(256, 256), (320, 240), (200, 360), (512, 384)] * 2  # (width, height)
PROMPTS = [
    "two red circles on a blue background",
    "A photo of a cat sitting on a wooden table, soft light",
    "an astronaut riding a horse",
    "three yellow triangles",
    "a painting of a lighthouse in a storm, dramatic sky, oil on canvas, highly detailed, trending on "
    "artstation, by a famous painter, with waves crashing against the rocks below and seagulls",
    "café at night",
    "",
    "green squares and red circles",
]
WORDS = (
    "a an the of on in at by with and two three red blue green yellow circle square triangle "
    "background photo cat sitting wooden table soft light astronaut riding horse painting lighthouse "
    "storm dramatic sky oil canvas highly detailed trending art station famous painter wave crash "
    "against rock below sea gull night"
).split()


def write_vocab(folder: Path) -> None:
    """A BERT WordPiece vocabulary laid out like bert-base-uncased's: [PAD] 0, [unused*], [UNK] 100,
    [CLS] 101, [SEP] 102, [MASK] 103, then characters, '##' pieces and some whole words."""
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    tokens = (
        ["[PAD]"]
        + [f"[unused{i}]" for i in range(99)]
        + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + chars
        + ["##" + c for c in chars if c.isalnum()]
        + ["##s", "##ing", "##ed", "##er"]
        + WORDS
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")


MED_CONFIG = {  # ImageReward's med_config.json
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}


def write_images(folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        rng = np.random.default_rng(SEED + i)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack(
            [
                127.5 * (1 + np.sin(rng.uniform(2, 12) * x + rng.uniform(2, 12) * y + rng.uniform(0, 6)))
                for _ in range(3)
            ],
            axis=-1,
        )
        for _ in range(3):  # a few flat rectangles
            x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
            img[y0 : y0 + rng.integers(10, h // 2), x0 : x0 + rng.integers(10, w // 2)] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        path = folder / f"{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


def versions(names: tuple[str, ...]) -> dict[str, str]:
    from refbench.provenance import package_versions

    return {"python": platform.python_version(), **package_versions(names)}


# ---- side 1: the package's own code --------------------------------------------------------


def randomise(model) -> None:
    """Random values everywhere: the package's init leaves biases at 0, LayerNorms at (1, 0) and a
    head whose output is ~1e-9 (every score = -mean/std), which would hide a wrong mapping."""
    import torch

    torch.manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("mlp.") and name.endswith("weight"):
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif p.ndim == 1:  # LayerNorm scales
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.add_(0.01 * torch.randn_like(p))


def run_original(work: Path) -> None:
    import ImageReward as RM
    import torch
    from ImageReward.models.BLIP import blip
    from PIL import Image
    from transformers import BertTokenizer

    model_dir = work / "model"
    tokenizer_dir = model_dir / "tokenizer"
    write_vocab(tokenizer_dir)
    med = model_dir / "med_config.json"
    med.write_text(json.dumps(MED_CONFIG, indent=2))

    class LocalBert(BertTokenizer):  # the package asks for 'bert-base-uncased' by name: give it the local one
        @classmethod
        def from_pretrained(cls, name, *args, **kwargs):
            return BertTokenizer.from_pretrained(
                str(tokenizer_dir) if name == "bert-base-uncased" else name, *args, **kwargs
            )

    blip.BertTokenizer = LocalBert
    started = time.perf_counter()
    torch.manual_seed(SEED)
    from ImageReward.ImageReward import ImageReward as ImageRewardModel  # the package's class (module of the same name)

    built = ImageRewardModel(med_config=str(med), device="cpu")
    randomise(built)
    torch.save(built.state_dict(), model_dir / "ImageReward.pt")
    del built
    model = RM.load(str(model_dir / "ImageReward.pt"), device="cpu", med_config=str(med))  # the package's loader
    images = write_images(work / "images")
    with torch.no_grad():
        scores = [float(model.score(prompt, Image.open(path).convert("RGB"))) for prompt, path in zip(PROMPTS, images)]
    tokens = [
        model.blip.tokenizer(p, padding="max_length", truncation=True, max_length=35)["input_ids"] for p in PROMPTS
    ]
    (work / "original.json").write_text(
        json.dumps(
            {
                "scores": scores,
                "tokens": tokens,
                "seconds": time.perf_counter() - started,
                "versions": versions(("image-reward", "torch", "torchvision", "transformers", "timm", "fairscale")),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            indent=1,
        )
    )


# ---- side 2: refbench's port, and the comparison ------------------------------------------------


def run_refbench(work: Path, original_python: str, out: Path | None) -> int:
    import numpy as np
    from PIL import Image

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the original side must not see refbench
    started = time.perf_counter()
    subprocess.run(
        [original_python, str(Path(__file__).resolve()), "original", "--work", str(work)], check=True, env=env
    )
    original_seconds = time.perf_counter() - started
    original = json.loads((work / "original.json").read_text())

    os.environ["HF_HUB_OFFLINE"] = "1"
    from refbench.evaluation.metrics import get_metric
    from refbench.evaluation.rewards._blip import MAX_LENGTH, load_tokenizer

    started = time.perf_counter()
    metric = get_metric(f"imagereward={work / 'model'}")
    images = [np.asarray(Image.open(work / "images" / f"{i}.png").convert("RGB")) for i in range(len(PROMPTS))]
    ours = [float(metric(img[None], [prompt])[0]) for img, prompt in zip(images, PROMPTS)]
    batched = [0.0] * len(PROMPTS)  # images i and i + 4 have one size: score them as one batch of 2
    half = len(PROMPTS) // 2
    for i in range(half):
        batched[i], batched[i + half] = map(
            float, metric(np.stack([images[i], images[i + half]]), [PROMPTS[i], PROMPTS[i + half]])
        )
    refbench_seconds = time.perf_counter() - started
    tokenizer = load_tokenizer(str(work / "model" / "tokenizer"))
    tokens = [tokenizer(p, padding="max_length", truncation=True, max_length=MAX_LENGTH)["input_ids"] for p in PROMPTS]

    diffs = [abs(a - b) for a, b in zip(ours, original["scores"])]
    batched_diffs = [abs(a - b) for a, b in zip(batched, original["scores"])]
    control = negative_control(work, images)
    control_diffs = [abs(a - b) for a, b in zip(control, original["scores"])]
    result = {
        "passed": max(diffs + batched_diffs) <= TOLERANCE
        and tokens == original["tokens"]
        and min(control_diffs) > TOLERANCE,
        "tolerance": TOLERANCE,
        "max_abs_difference": max(diffs),
        "max_abs_difference_batched": max(batched_diffs),
        "tokens_equal": tokens == original["tokens"],
        "original_scores": original["scores"],
        "refbench_scores": ours,
        "score_spread": {"min": min(ours), "max": max(ours), "std": float(np.std(ours))},
        "control_min_abs_difference": min(control_diffs),  # the port with two ViT LayerNorms swapped
        "parameters": original["parameters"],
        "image_sizes": SIZES,
        "prompts": PROMPTS,
        "original_env": original["versions"],
        "refbench_env": versions(("refbench", "torch", "torchvision", "transformers")),
        "seconds": {
            "original (build, randomise, save, load, score)": round(original_seconds, 1),
            "refbench (load, score)": round(refbench_seconds, 1),
        },
    }
    print(f"{'prompt':<40} {'image-reward':>13} {'refbench':>13} {'|diff|':>10}")
    for prompt, a, b, d in zip(PROMPTS, original["scores"], ours, diffs):
        print(f"{prompt[:40]:<40} {a:>13.7f} {b:>13.7f} {d:>10.2e}")
    print(
        f"max |difference| {max(diffs):.3e} one image per call, {max(batched_diffs):.3e} two per call "
        f"(tolerance {TOLERANCE:g}); tokens equal: {result['tokens_equal']}; "
        f"{'PASS' if result['passed'] else 'FAIL'}"
    )
    print(f"negative control (ViT block 0's two LayerNorms swapped): |difference| >= {min(control_diffs):.3e}")
    print(f"original env: {original['versions']}\nrefbench env: {result['refbench_env']}")
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["passed"] else 1


def negative_control(work: Path, images) -> list[float]:
    """Scores of the port with ViT block 0's ``norm1`` and ``norm2`` swapped: a wrong key mapping
    of this kind must show as differences far above the tolerance, or the check proves nothing."""
    import torch

    from refbench.evaluation.rewards import imagereward as ir
    from refbench.evaluation.rewards._blip import MAX_LENGTH, load_tokenizer, preprocess
    from refbench.evaluation.rewards._common import to_pil

    resolved = ir.resolve(str(work / "model"))
    model = ir.load_model(resolved)
    layer = model.vision.encoder.layers[0]
    layer.layer_norm1, layer.layer_norm2 = layer.layer_norm2, layer.layer_norm1
    tokenizer = load_tokenizer(resolved.tokenizer)
    transform = preprocess(model.image_size)
    out = []
    with torch.no_grad():
        for img, prompt in zip(images, PROMPTS):
            tok = tokenizer([prompt], padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            pix = transform(to_pil(img[None])[0])[None]
            out.append(float(model(pix, tok["input_ids"], tok["attention_mask"])[0]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("side", nargs="?", choices=("original", "refbench"), default="refbench")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ir-check"))
    parser.add_argument("--original-python", default="/tmp/ir-env/bin/python")
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.side == "original":
        run_original(args.work)
        return 0
    return run_refbench(args.work, args.original_python, args.out)


if __name__ == "__main__":
    sys.exit(main())
