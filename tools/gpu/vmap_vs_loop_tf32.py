import torch

from mamlcourse.config import omniglot_preset, replace
from mamlcourse.experiments.omniglot import omniglot_samplers
from mamlcourse.maml import get_params, meta_loss
from mamlcourse.models import build_model
from mamlcourse.tasks import TaskBatch, seeded_generator

cfg = omniglot_preset("paper-5w1s")
s = omniglot_samplers(cfg, ".gpu/data", "cuda", progress=False)["train"]
batch = s.sample(32, seeded_generator(123))
flat = lambda g: torch.cat([x.flatten() for x in g])
def grads(dtype, v):
    torch.manual_seed(0); model = build_model(cfg).cuda().to(dtype); p = get_params(model)
    b = TaskBatch(batch.x_support.to(dtype), batch.y_support, batch.x_query.to(dtype), batch.y_query)
    loss, _ = meta_loss(model, p, b, replace(cfg, vectorize=v))
    return flat(torch.autograd.grad(loss, list(p.values()))).double(), list(p)
for tf32 in (True, False):
    torch.backends.cudnn.allow_tf32 = tf32; torch.backends.cuda.matmul.allow_tf32 = tf32
    for dtype in (torch.float32, torch.float64):
        if dtype == torch.float64 and not tf32: continue
        a, names = grads(dtype, False); b, _ = grads(dtype, True)
        ref, _ = grads(torch.float64, False)
        print(f"tf32={tf32} {dtype}: vmap vs loop {((a-b).norm()/a.norm()).item():.2e}; loop vs float64 loop {((a-ref).norm()/ref.norm()).item():.2e}; vmap vs float64 loop {((b-ref).norm()/ref.norm()).item():.2e}", flush=True)
