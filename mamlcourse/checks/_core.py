"""What every check shares: the failure type, calling the student's function, comparisons.

A check never lets an ``assert`` or a traceback from its own code reach the student: it
raises ``ExerciseCheckFailed`` with one message saying what is wrong and how to fix it,
and IPython shows only that message (see ``_render_traceback_``).
"""

from __future__ import annotations

import functools
import inspect
import math
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_LIBRARY_DIRS = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1]))

# Two float32 computations of the same maths agree to about 1e-6 relative; the mistakes the
# checks look for change results by 1e-2 or more.
RTOL = 1e-4
ATOL = 1e-6


class ExerciseCheckFailed(Exception):
    """Your function gave a wrong answer; the message says what looks wrong and how to fix it.

    Attributes:
        exercise: "2.1".
        message: the explanation, without the exercise number.
    """

    def __init__(self, exercise: str, message: str):
        self.exercise = exercise
        self.message = message
        super().__init__(f"Exercise {exercise}: {message}")

    def _render_traceback_(self) -> list[str]:
        # IPython prints this instead of a traceback: the checker's own frames would only
        # bury the one line that matters.
        return [f"\x1b[31m✗ {type(self).__name__}\x1b[0m: {self}"]


class ExerciseNotDone(ExerciseCheckFailed, NotImplementedError):
    """The function still raises the exercise's ``NotImplementedError``."""


def single_threaded(check: Callable) -> Callable:
    """Run ``check`` with one CPU thread, restoring the setting after.

    The checks' models are tiny: thread hand-offs cost more than the arithmetic, and on a
    machine whose cores are busy a second thread waits for a free core at every operation.
    """
    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return wrapper


def fail(exercise: str, message: str) -> ExerciseCheckFailed:
    """The exception to raise (``raise fail(...) from None``)."""
    return ExerciseCheckFailed(exercise, message)


def passed(exercise: str, message: str) -> None:
    """Tell the student the exercise passed."""
    print(f"✓ Exercise {exercise} passed: {message}")


def _student_line(tb) -> str:
    """" (line 12: `grads = ...`)" for the innermost frame outside torch and mamlcourse."""
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_LIBRARY_DIRS)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (in {frame.name}, line {frame.lineno}{code})"


def call(exercise: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, turning an exception into a message that names the exercise."""
    if not callable(fn):
        raise fail(exercise, f"pass your function itself to the check, got {type(fn).__name__} "
                   f"{fn!r:.60}") from None
    name = getattr(fn, "__name__", "function")
    # Params dicts are passed as copies, so that writing into one can be caught below.
    given = [dict(a) if _is_params(a) else a for a in args]
    try:
        result = fn(*given, **kwargs)
    except ExerciseCheckFailed:
        raise
    except NotImplementedError:
        raise ExerciseNotDone(exercise, f"{name} is not written yet: replace its `raise "
                              f"NotImplementedError(...)` line with your code, run that cell, "
                              f"then this one") from None
    except Exception as err:  # the student's bug, reported in one line
        where = _student_line(err.__traceback__)
        raise fail(exercise, f"your {name} raised {type(err).__name__}: {err}{where}") from None
    for before, after in zip(args, given):
        if _is_params(before) and (after.keys() != before.keys()
                                   or any(after[k] is not before[k] for k in before)):
            raise fail(exercise, f"your {name} changed the params dict it was given "
                       f"(params[name] = ...): build a new dict and return it. params must stay θ, "
                       f"the outer loop still needs it")
    return result


def _is_params(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Tensor) for v in value.values())


def signature_names(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def close(a: Tensor | Mapping[str, Tensor] | float, b: Tensor | Mapping[str, Tensor] | float,
          rtol: float = RTOL) -> bool:
    """Whether ``a`` matches ``b`` (tensors, dicts of tensors or numbers) up to float32 rounding.

    The tolerance is relative to the largest entry of ``b``, so a step of 1e-3 on weights of
    size 1 still counts as a difference.
    """
    if isinstance(b, Mapping):
        return (isinstance(a, Mapping) and a.keys() == b.keys()
                and all(close(a[k], b[k], rtol) for k in b))
    a = torch.as_tensor(a).detach().double()
    b = torch.as_tensor(b).detach().double()
    if a.shape != b.shape or not bool(torch.isfinite(a).all()):
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool((a - b).abs().max() <= rtol * scale + ATOL) if b.numel() else True


def largest_difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> tuple[str, float]:
    """The name whose tensors differ most, and by how much."""
    diffs = {k: float((a[k].detach().double() - b[k].detach().double()).abs().max()) for k in b}
    name = max(diffs, key=lambda k: diffs[k] if math.isfinite(diffs[k]) else math.inf)
    return name, diffs[name]


def snapshot(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copies of ``tensors``' current values."""
    return {k: t.detach().clone() for k, t in tensors.items()}


def changed(tensors: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> list[str]:
    """Names whose values differ from ``before`` (something updated them in place)."""
    return [k for k, t in tensors.items() if not torch.equal(t.detach(), before[k])]


def check_params(exercise: str, name: str, result: Any, params: Mapping[str, Tensor],
                 what: str = "adapted_params") -> None:
    """``result`` must be a dict with ``params``' names, holding tensors of the same shapes."""
    if result is None:
        raise fail(exercise, f"your {name} returned None: did you forget `return {what}`?")
    if isinstance(result, tuple) and len(result) and isinstance(result[0], Mapping):
        raise fail(exercise, f"your {name} returned a tuple: return only {what}, one dict")
    if not isinstance(result, Mapping):
        raise fail(exercise, f"{what} must be a dict {{name: tensor}} like params, "
                   f"your {name} returned {type(result).__name__}")
    missing = [k for k in params if k not in result]
    extra = [k for k in result if k not in params]
    if missing:
        raise fail(exercise, f"{what} is missing {missing}: it must hold every name in params")
    if extra:
        raise fail(exercise, f"{what} has names that are not in params: {extra}")
    for k, p in params.items():
        value = result[k]
        if not isinstance(value, Tensor):
            raise fail(exercise, f"{what}[{k!r}] is a {type(value).__name__}, not a tensor")
        if value.shape != p.shape:
            raise fail(exercise, f"{what}[{k!r}] has shape {shape(value)}, but params[{k!r}] has "
                       f"{shape(p)}: each adapted tensor keeps its parameter's shape")
        if not bool(torch.isfinite(value).all()):
            raise fail(exercise, f"{what}[{k!r}] holds NaN or inf values")


def check_model_untouched(exercise: str, model: torch.nn.Module, before: Mapping[str, Tensor],
                          fix: str = "adapt a copy") -> None:
    """The model's own parameters must be as they were before the student's call."""
    names = changed(dict(model.named_parameters()), before)
    if names:
        raise fail(exercise, f"the model's own parameters changed ({', '.join(names[:3])}"
                   f"{', ...' if len(names) > 3 else ''}): {fix}. Build new tensors, "
                   f"{{name: p - inner_lr * g}}, instead of updating in place (no `p -= ...`, "
                   f"no `.data`, no optimizer.step() on the model)")


def probe_gradient(params: Mapping[str, Tensor], outputs: Mapping[str, Tensor],
                   weights: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """d/d params of Σ_k <weights_k, outputs_k>, or None when ``outputs`` do not depend on params.

    Reveals how the outputs depend on params: the identity for first-order adaptation,
    I - α∇²L for second order.
    """
    terms = [(weights[k] * outputs[k]).sum() for k in outputs if outputs[k].requires_grad]
    if not terms:
        return None
    grads = torch.autograd.grad(torch.stack(terms).sum(), list(params.values()), allow_unused=True)
    if all(g is None for g in grads):
        return None
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def random_like(tensors: Mapping[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    return {k: torch.randn(t.shape, generator=generator, dtype=t.dtype) for k, t in tensors.items()}
