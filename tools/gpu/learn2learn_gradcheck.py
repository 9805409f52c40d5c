import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, ".gpu/l2l")
from learn2learn.algorithms.maml import MAML

from mamlcourse.config import omniglot_preset, replace
from mamlcourse.experiments.omniglot import omniglot_samplers
from mamlcourse.maml import get_params, meta_loss
from mamlcourse.models import build_model
from mamlcourse.tasks import seeded_generator

cfg = omniglot_preset("paper-5w1s")
s = omniglot_samplers(cfg, ".gpu/data", "cuda", progress=False)["train"]
batch = s.sample(32, seeded_generator(123))
for bench in (False, True):
    torch.backends.cudnn.benchmark = bench
    torch.manual_seed(0); model = build_model(cfg).cuda(); p = get_params(model)
    ours = {}
    for v in (False, True):
        loss, _ = meta_loss(model, p, batch, replace(cfg, vectorize=v))
        ours[v] = torch.autograd.grad(loss, list(p.values()))
    maml = MAML(model, lr=cfg.inner_lr)
    total = 0
    for xs, ys, xq, yq in (tuple(t) for t in batch.tasks()):
        l = maml.clone(); l.adapt(F.cross_entropy(l(xs), ys)); total = total + F.cross_entropy(l(xq), yq)
    theirs = torch.autograd.grad(total / 32, list(maml.parameters()))
    flat = lambda g: torch.cat([x.flatten() for x in g])
    for v in (False, True):
        a, b = flat(theirs), flat(ours[v])
        per = [((x - y).norm() / y.norm()).item() for x, y, n in zip(theirs, ours[v], p) if "features.0.bias" not in n]
        print("cudnn.benchmark", bench, "vmap" if v else "loop", "global rel diff", ((a - b).norm() / b.norm()).item(),
              "max per-tensor rel (conv biases before BN excluded, exact gradient 0):",
              max(((x - y).norm() / y.norm()).item() for x, y, n in zip(theirs, ours[v], p) if not (n.startswith("features.") and n.endswith(".bias") and int(n.split(".")[1]) % 4 == 0)),
              "largest |bias grad| before BN", max(x.abs().max().item() for x, n in zip(ours[v], p) if n.startswith("features.") and n.endswith(".bias") and int(n.split(".")[1]) % 4 == 0))
