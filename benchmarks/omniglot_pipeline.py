#!/usr/bin/env python3
"""What the Omniglot data pipeline costs beside the meta-step it feeds.

    MAMLCOURSE_DATA=/path/to/omniglot python benchmarks/omniglot_pipeline.py [--json]

Prints the cache's build time (decoding 32,460 PNGs, into a fresh temporary cache folder)
and load time, and for paper-5w1s and paper-20w1s the sampler's milliseconds per training
batch beside one meta-iteration's (as ``meta_train`` runs it), as a ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from mamlcourse.config import omniglot_preset
from mamlcourse.data.omniglot import OmniglotTasks, load_images
from mamlcourse.maml import get_params, meta_loss
from mamlcourse.models import build_model
from mamlcourse.tasks import seeded_generator


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - tic))
    return statistics.median(times)


def measure_preset(name: str, images, steps: int) -> dict:
    """Sampler ms per training batch and one meta-iteration's ms for the preset ``name``."""
    cfg = omniglot_preset(name)
    sampler = OmniglotTasks.from_config(cfg, "train", omniglot=images, device="cpu")
    generator = seeded_generator(0)
    sample_ms = median_ms(lambda: sampler.sample(cfg.tasks_per_batch, generator), 200)
    torch.manual_seed(0)
    model = build_model(cfg)
    params = get_params(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    batch = sampler.sample(cfg.tasks_per_batch, generator)

    def step() -> None:
        loss, _ = meta_loss(model, params, batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    step_ms = median_ms(step, steps)
    return {"sampler_ms_per_batch": sample_ms, "meta_step_ms": step_ms,
            "sampler_share_percent": 100 * sample_ms / (sample_ms + step_ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--data", help="folder with the zips (default: $MAMLCOURSE_DATA)")
    parser.add_argument("--steps", type=int, default=5, help="meta-iterations timed per preset")
    args = parser.parse_args()

    result: dict = {"threads": torch.get_num_threads(), "presets": {}}
    with tempfile.TemporaryDirectory() as cache:
        tic = time.perf_counter()
        images = load_images(args.data, cache_dir=cache, progress=False)
        result["cache_build_s"] = time.perf_counter() - tic
        result["cache_load_s"] = median_ms(lambda: load_images(args.data, cache_dir=cache, progress=False),
                                           5) / 1000
    for name in ("paper-5w1s", "paper-20w1s"):
        result["presets"][name] = measure_preset(name, images, args.steps)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"cache build {result['cache_build_s']:.1f} s, cache load {result['cache_load_s']:.2f} s "
          f"({result['threads']} threads)")
    for name, r in result["presets"].items():
        print(f"{name}: sampler {r['sampler_ms_per_batch']:.2f} ms/batch, "
              f"meta-step {r['meta_step_ms']:.0f} ms ({r['sampler_share_percent']:.2f}% of the iteration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
