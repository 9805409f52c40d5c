import sys

import torch

sys.path.insert(0, "tools/gpu")
import paper_5w1s as g

from mamlcourse.config import omniglot_preset
from mamlcourse.experiments.omniglot import omniglot_samplers
from mamlcourse.tasks import seeded_generator

torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = False
for preset in ("paper-20w1s", "paper-5w5s", "paper-20w5s"):
    cfg = omniglot_preset(preset)
    s = omniglot_samplers(cfg, ".gpu/data", "cuda", progress=False)["train"]
    gen = seeded_generator(5)
    batches = [s.sample(cfg.tasks_per_batch, gen) for _ in range(80)]
    print(preset, flush=True)
    g.mamlcourse_variant(cfg, "vmap+cuda-graph", batches, torch.device("cuda"), limit_s=6)
