"""The exercise checks: run your function on fresh random inputs and say what, if anything, is wrong.

Each exercise notebook calls one check after each function you write:

    from mamlcourse import checks
    checks.check_inner_step(inner_step)
    ✓ Exercise 2.1 passed: your step equals θ - α∇L_support(θ) on 3 tasks, ...

A check compares your function with the library (``mamlcourse.inner_loop``,
``meta_loss``, ``confidence_interval``, ...) on several seeds. When they disagree it
looks for the mistake that explains the difference and raises ``ExerciseCheckFailed``
with one message in plain words, for example

    ExerciseCheckFailed: Exercise 2.1: you stepped up the gradient instead of down: ...

An exception inside your own function is reported as "your inner_step raised ...",
with the line of your code it came from.

| exercise | check |
|---|---|
| 1.1 sample an N-way K-shot episode | ``check_sample_episode`` |
| 2.1 one inner step, second order | ``check_inner_step`` |
| 2.2 k inner steps | ``check_adapt`` |
| 3.1 the meta-loss of a batch of tasks | ``check_meta_loss`` |
| 3.2 the outer update | ``check_meta_step`` |
| 4.1 a first-order inner step | ``check_first_order_step`` |
| 4.2 first-order MAML's meta-gradient | ``check_first_order_meta_gradient`` |
| 5.1 mean and 95% confidence interval | ``check_confidence_interval`` |
| 5.2 a score per test task | ``check_evaluate_tasks`` |
| 6.1 Reptile's update | ``check_reptile_step`` |
| 6.2 ANIL's inner loop | ``check_anil_inner_loop`` |
| 7.1 a Hessian-vector product by double backward | ``check_hvp_double_backward`` |
| 7.2 a Hessian-vector product by jvp over grad | ``check_hvp_forward_over_reverse`` |
| 7.3 the one-step meta-gradient by hand | ``check_one_step_meta_gradient`` |
| 7.4 the k-step meta-gradient by hand | ``check_k_step_meta_gradient`` |
| 7.5 timing: a warm-up, then the median | ``check_median_ms`` |
| 8.1 a prototypical network's logits | ``check_protonet_logits`` |
| 8.2 Meta-SGD's inner step | ``check_meta_sgd_inner_step`` |
"""

from ._core import ExerciseCheckFailed, ExerciseNotDone
from .episodes import check_sample_episode
from .evaluation import check_confidence_interval, check_evaluate_tasks
from .first_order import check_first_order_meta_gradient, check_first_order_step
from .inner_loop import check_adapt, check_inner_step
from .meta_gradient import (
    check_hvp_double_backward,
    check_hvp_forward_over_reverse,
    check_k_step_meta_gradient,
    check_median_ms,
    check_one_step_meta_gradient,
)
from .meta_update import check_meta_loss, check_meta_step
from .protonet_metasgd import check_meta_sgd_inner_step, check_protonet_logits
from .reptile_anil import check_anil_inner_loop, check_reptile_step

__all__ = [
    "ExerciseCheckFailed", "ExerciseNotDone", "check_sample_episode", "check_inner_step",
    "check_adapt", "check_meta_loss", "check_meta_step", "check_first_order_step",
    "check_first_order_meta_gradient", "check_confidence_interval", "check_evaluate_tasks",
    "check_reptile_step", "check_anil_inner_loop", "check_hvp_double_backward",
    "check_hvp_forward_over_reverse", "check_one_step_meta_gradient", "check_k_step_meta_gradient",
    "check_median_ms", "check_protonet_logits", "check_meta_sgd_inner_step",
]
