import sys

import torch

sys.path.insert(0, "tools/gpu")
import paper_5w1s as g

from mamlcourse.config import omniglot_preset
from mamlcourse.experiments.omniglot import omniglot_samplers
from mamlcourse.tasks import seeded_generator

cfg = omniglot_preset("paper-5w1s")
s = omniglot_samplers(cfg, ".gpu/data", "cuda", progress=False)["train"]
gen = seeded_generator(5)
batches = [s.sample(32, gen) for _ in range(150)]
torch.backends.cudnn.benchmark = True
for tf32 in (False, True):
    torch.backends.cudnn.allow_tf32 = tf32; torch.backends.cuda.matmul.allow_tf32 = tf32
    print("tf32", tf32, flush=True)
    g.mamlcourse_variant(cfg, "vmap+cuda-graph", batches, torch.device("cuda"), limit_s=8)
    g.mamlcourse_variant(cfg, "vmap", batches[:60], torch.device("cuda"), limit_s=5)
