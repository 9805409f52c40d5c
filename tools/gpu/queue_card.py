"""A finished run's model card, written from its ``results.json`` alone (every number read from it).

A card that the queue did not write (the hand-written one of the 36,000-iteration max-pool
paper-5w1s run) is kept below the new one, under its own heading: nothing is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

MARK = "<!-- written by tools/gpu/queue_card.py from results.json -->"
# ConvNet4's two networks (``OmniglotConfig.downsample``; a config written before it: max-pooling).
NETWORKS = {"stride": "stride-2 convolutions, the paper's Omniglot network (Section 5.2)",
            "maxpool": "2x2 max-pooling, not the paper's Omniglot network"}


def chunk_settings(ledger: dict, job: str) -> str | None:
    """The settings the queue's training chunks of ``job`` ran with, e.g. ``vmap, TF32 on (12 chunks)``."""
    seen: dict[str, int] = {}
    for window in ledger.get("windows", []):
        for chunk in window.get("chunks", []):
            if chunk.get("job") == job and chunk.get("kind") == "train" and "settings" in chunk:
                s = chunk["settings"]
                key = f"{s['vectorize'] or 'the CLI default'} over the tasks, TF32 {'on' if s['tf32'] else 'off'}"
                key += ", images channels-last (NHWC)" if s.get("channels_last") else ""
                seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{k} ({n} chunk{'s' if n > 1 else ''})" for k, n in seen.items()) or None


def off_queue(results: dict) -> str:
    """The part of a run trained on a CPU, outside the GPU queue (its commands: the folder's train.log)."""
    spent = results.get("trained_on", {})
    cpus = {name: d for name, d in spent.items() if name.startswith("cpu")}
    if not cpus or not any(name.startswith("cuda") for name in spent):
        return ""
    return "; besides, " + " and ".join(f"{d['iterations']:,} iterations on {name}" for name, d in cpus.items()) + (
        " outside the queue, by the same `train` command with `--device cpu` (each command in the run "
        "folder's `train.log`)")


def trained_by(results: dict, folder: str, ledger: str, outside_queue: bool = False) -> str:
    """The commands that trained and scored the run: the GPU queue's chunks (and any CPU head start),
    or, for a run finished outside the queue, the ``train`` command on the devices it ran on."""
    score = (f"`python -m mamlcourse eval omniglot --checkpoint {folder} --tasks {results['eval']['num_tasks']}"
             f"{' --lake-runs' if 'lake_runs' in results else ''}`")
    if outside_queue:
        devices = list(results.get("trained_on", {})) or [results["device"]]
        flag = " --device cpu" if all(name.startswith("cpu") for name in devices) else ""
        return (f"`python -m mamlcourse train omniglot --preset {results['preset']} --out {folder}{flag}` on "
                f"{' and '.join(devices)}, outside the GPU queue, resumed from its checkpoint by the same "
                f"command (each command in the run folder's `train.log`), then {score}")
    return ("the GPU queue (`tools/gpu/README.md`): `python -m mamlcourse train omniglot --preset "
            f"{results['preset']} --out {folder} --cuda-graph` in chunks resumed across GPU windows (each chunk "
            f"in `{ledger}`), then {score}" + off_queue(results))


def budget(results: dict) -> str:
    """Iterations and training time; each device's share when the run was resumed on another one
    (``results["trained_on"]``: a CPU head start, then GPU windows), never a mean across them."""
    if len(results.get("trained_on", {})) > 1:
        from mamlcourse.experiments.omniglot import trained_on  # here: the card's other rows need no torch

        return (f"{results['iterations']:,} iterations, {results['wall_seconds']:.0f} s of training on "
                f"{len(results['trained_on'])} devices: {trained_on(results)}")
    return (f"{results['iterations']:,} iterations, {results['wall_seconds']:.0f} s of training on "
            f"{next(iter(results.get('trained_on', {})), results['device'])} "
            f"({results['ms_per_iteration']:.1f} ms/iteration averaged over the whole run)")


def model_card(results: dict, folder: str, ledger: str = "docs/gpu/table1-queue.json",
               settings: str | None = None, outside_queue: bool = False) -> str:
    cfg, ev = results["config"], results["eval"]
    steps = ", ".join(f"{100 * a:.2f}" for a in ev["accuracy_by_step"])
    paper = results.get("paper")
    paper_text = f"; paper (Table 1): {100 * paper['accuracy']:.1f}% ± {100 * paper['ci95']:.1f}" if paper else ""
    rows = [
        ("Trained by", trained_by(results, folder, ledger, outside_queue)),
        ("Config", f"{cfg['n_way']}-way {cfg['k_shot']}-shot, ConvNet4 ({cfg['num_filters']} filters, batch norm "
         f"on batch statistics, {NETWORKS[cfg.get('downsample', 'maxpool')]}), "
         f"{cfg['num_inner_steps']} inner step(s) of α = {cfg['inner_lr']} on the mean "
         f"cross-entropy, {'first' if cfg['first_order'] else 'second'} order, Adam β = {cfg['outer_lr']}, "
         f"{cfg['tasks_per_batch']} tasks per batch, {cfg['k_query']} query image(s) per class in training, "
         f"seed {cfg['seed']}, split `{cfg['split']}`, rotations {cfg['rotations']}"),
        ("Budget", budget(results)),
        *([("Settings", f"{settings} (`tools/gpu/probe_speed.py` timed the variants; "
                         "`queue_jobs.choose_settings` chose)")] if settings else []),
        ("Test accuracy", f"**{100 * ev['accuracy']:.2f}% ± {100 * ev['ci95']:.2f}** (95% CI) on "
         f"{ev['num_tasks']} test tasks after {ev['inner_steps']} inner steps, {ev['k_query']} query images "
         f"per class{paper_text}. By steps 0..{len(ev['accuracy_by_step']) - 1}: {steps}"),
    ]
    if "lake_runs" in results:
        lake = results["lake_runs"]
        rows.append(("Lake's 20 one-shot runs", f"{lake['head']}: error {lake['error_percent']:.1f}% after "
                     f"{lake['inner_steps']} steps (people {lake['human_error_percent']}%, "
                     f"BPL {lake['bpl_error_percent']}%)"))
    rows.append(("Transductive", "predictions use the statistics of the task's query batch (batch norm as "
                 "in the original code)"))
    lines = [MARK, f"# Model card: MAML ConvNet4, Omniglot {cfg['n_way']}-way {cfg['k_shot']}-shot", "",
             "`checkpoint.pt` is a full training checkpoint (model, Adam state, step, RNG states, config, "
             f"history), loadable with `mamlcourse.checkpoint.load_model(\"{folder}\")`. Every number "
             "below is read from `results.json`.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def write_card(root: Path, folder: str, ledger: str = "docs/gpu/table1-queue.json",
               settings: str | None = None, outside_queue: bool = False) -> Path:
    """Write ``folder/MODEL_CARD.md`` from ``folder/results.json``, keeping a hand-written card below.

    ``settings``: what its chunks ran with (``chunk_settings`` of the ledger), a row of its own.
    ``outside_queue``: the run was trained to its end by ``train`` commands, not by the queue.
    """
    results = json.loads((root / folder / "results.json").read_text())
    path = root / folder / "MODEL_CARD.md"
    card = model_card(results, folder, ledger, settings, outside_queue)
    if path.is_file():
        old = path.read_text()
        if not old.startswith(MARK):  # hand-written: kept, its title one level down
            card += "\n## The card before the queue finished this run\n\n" + (
                "### " + old[2:] if old.startswith("# ") else old)
        elif "\n## The card before" in old:  # written by the queue before: keep what it kept
            card += old[old.index("\n## The card before"):]
    path.write_text(card)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python tools/gpu/queue_card.py FOLDER``: the card of a run finished outside the queue."""
    import argparse

    parser = argparse.ArgumentParser(description="Write FOLDER/MODEL_CARD.md from FOLDER/results.json "
                                     "(the queue writes it itself for the runs it finishes).")
    parser.add_argument("folder", help="the run folder, relative to --root, e.g. trained/omniglot-5w1s")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    if not (args.root / args.folder / "results.json").is_file():
        parser.error(f"no results.json in {args.root / args.folder}: score the run first "
                     "(python -m mamlcourse eval omniglot --checkpoint FOLDER --tasks 600 --out DIR, "
                     "then copy DIR/results.json into FOLDER)")
    print(write_card(args.root, args.folder, outside_queue=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
