"""Check that each toy oracle metric ranks a clean render above a corrupted one.

For N prompts sampled (with replacement, fixed seed) from ``all_prompts()``, the
clean render and the corrupted render share the rng seed, hence the layout, and
differ only in the corruption. A check passes when the clean image scores
strictly higher in >= 95 % of the pairs. Writes ``results/oracle_check.json``.

Usage: python benchmarks/oracle_check.py [--n 1000] [--seed 0] [--out results/oracle_check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from refbench.evaluation.metrics import get_metric
from refbench.toy.prompts import ToyPrompt, all_prompts
from refbench.toy.render import Corruption, random_corruption, render_clean, render_corrupted

THRESHOLD = 0.95

# (check name, metric, corruption maker). The maker gets an rng to draw e.g. the sign of count_delta.
CHECKS: list[tuple] = [
    ("colour/wrong_colour", "colour", lambda r: Corruption(wrong_colour=True)),
    ("count/count_delta=+-1", "count", lambda r: Corruption(count_delta=int(r.choice([-1, 1])))),
    ("shape/wrong_shape", "shape", lambda r: Corruption(wrong_shape=True)),
    ("background/wrong_background", "background", lambda r: Corruption(wrong_background=True)),
    ("aesthetic/blur=1.0", "aesthetic", lambda r: Corruption(blur=1.0)),
    ("aesthetic/blur=0.5", "aesthetic", lambda r: Corruption(blur=0.5)),
    ("aesthetic/noise=0.08", "aesthetic", lambda r: Corruption(noise=0.08)),
    ("aesthetic/noise=0.03", "aesthetic", lambda r: Corruption(noise=0.03)),
    ("human/random_corruption(0.7)", "human", lambda r: random_corruption(r, 0.7)),
    ("human/random_corruption(0.3)", "human", lambda r: random_corruption(r, 0.3)),
]
# Informational: diffusion samples are slightly soft, so the same adherence checks
# with blur 0.5 px and noise 0.02 applied to BOTH images of each pair.
SOFT = {"blur": 0.5, "noise": 0.02}
CHECKS += [
    (f"{name}|soft", metric, (lambda mk: lambda r: Corruption(**{**mk(r).__dict__, **SOFT}))(make), Corruption(**SOFT))
    for name, metric, make in CHECKS[:3]
]
# the brief's required checks; the others are reported for information
REQUIRED = {"colour/wrong_colour", "count/count_delta=+-1", "shape/wrong_shape"}


def sample_prompts(n: int, seed: int) -> list[ToyPrompt]:
    pool = all_prompts()
    idx = np.random.default_rng(seed).integers(0, len(pool), size=n)
    return [pool[i] for i in idx]


def run_check(
    prompts: list[ToyPrompt],
    metric: str,
    make: Callable[[np.random.Generator], Corruption],
    seed: int,
    base: Corruption | None = None,
) -> dict:
    """Fraction of prompts where the ``base`` render (default: clean) scores strictly
    above the render corrupted by ``make``."""
    clean, bad = [], []
    crng = np.random.default_rng([seed, 1])
    for i, p in enumerate(prompts):
        corr = make(crng)
        rng = np.random.default_rng([seed, 2, i])
        clean.append(render_clean(p, rng) if base is None else render_corrupted(p, base, rng))
        bad.append(render_corrupted(p, corr, np.random.default_rng([seed, 2, i])))
    texts = [p.text for p in prompts]
    m = get_metric(metric)
    t0 = time.perf_counter()
    s_clean = m(np.stack(clean), texts)
    seconds = time.perf_counter() - t0
    s_bad = m(np.stack(bad), texts)
    return {
        "metric": metric,
        "clean_above": float(np.mean(s_clean > s_bad)),
        "ties": float(np.mean(s_clean == s_bad)),
        "mean_clean": float(s_clean.mean()),
        "mean_corrupted": float(s_bad.mean()),
        "distinct_clean_values": int(len(np.unique(s_clean))),
        "seconds_per_1000": seconds * 1000 / len(prompts),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/oracle_check.json")
    args = ap.parse_args(argv)
    prompts = sample_prompts(args.n, args.seed)
    results = {}
    for name, metric, make, *base in CHECKS:
        results[name] = run_check(prompts, metric, make, args.seed, *base)
        results[name]["required"] = name in REQUIRED
        results[name]["passed"] = results[name]["clean_above"] >= THRESHOLD
        r = results[name]
        print(
            f"{name:32s} clean>corrupted {r['clean_above']:.3f}  ties {r['ties']:.3f}  "
            f"mean {r['mean_clean']:.3f} vs {r['mean_corrupted']:.3f}  {r['seconds_per_1000']:.2f} s/1000"
        )
    ok = all(r["passed"] for n, r in results.items() if r["required"])
    out = {"n_prompts": args.n, "seed": args.seed, "threshold": THRESHOLD, "all_required_passed": ok, "checks": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}; required checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
