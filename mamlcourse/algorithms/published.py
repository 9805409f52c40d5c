"""Published few-shot results: the one place the course keeps other papers' numbers.

Every entry names its paper, the table it is printed in and the section that table belongs to,
so a reader can check it in one look; ``tests/test_published.py`` checks that each citation has
that shape. Lessons, the README's numbers and the benchmark tables read from here instead of
typing the numbers again.

Accuracies are percentages on test tasks; ``ci95`` is the paper's ± (a 95% confidence interval
where the paper says so), ``None`` where the paper gives none. These are other people's numbers
with other budgets (60,000+ meta-iterations, tuned settings), never targets a short run is
expected to reach.

Two things to keep in mind when comparing:

- **Transduction.** MAML's original code normalises with the statistics of the batch it is
  given, at test time too, so its Omniglot and MiniImagenet numbers are *transductive* (Nichol,
  Achiam & Schulman 2018 label them "+ Transduction" in their Tables 1 and 2). The course's
  models normalise the same way, so compare them with transductive figures.
- **First-order MAML on Omniglot** is not in the MAML paper: Finn et al. report first order only
  on MiniImagenet (Table 1, bottom half). The Omniglot figure is from Nichol et al. 2018, Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paper:
    """A paper, cited by its authors, venue and year, with a link to its text."""

    authors: str
    venue: str
    year: int
    title: str
    url: str

    def __str__(self) -> str:
        if self.venue.startswith("arXiv"):
            return f"{self.authors}, {self.year} ({self.venue})"
        return f"{self.authors}, {self.venue} {self.year}"


FINN_2017 = Paper("Finn, Abbeel & Levine", "ICML", 2017,
                  "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
                  "https://arxiv.org/abs/1703.03400")
NICHOL_2018 = Paper("Nichol, Achiam & Schulman", "arXiv:1803.02999v3", 2018,
                    "On First-Order Meta-Learning Algorithms", "https://arxiv.org/abs/1803.02999")
LI_2017 = Paper("Li, Zhou, Chen & Li", "arXiv:1707.09835", 2017,
                "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", "https://arxiv.org/abs/1707.09835")
ANTONIOU_2019 = Paper("Antoniou, Edwards & Storkey", "ICLR", 2019, "How to train your MAML",
                      "https://arxiv.org/abs/1810.09502")
SNELL_2017 = Paper("Snell, Swersky & Zemel", "NeurIPS", 2017, "Prototypical Networks for Few-shot Learning",
                   "https://arxiv.org/abs/1703.05175")
LAKE_2015 = Paper("Lake, Salakhutdinov & Tenenbaum", "Science", 2015,
                  "Human-level concept learning through probabilistic program induction",
                  "https://doi.org/10.1126/science.aab3050")

PAPERS = (FINN_2017, NICHOL_2018, LI_2017, ANTONIOU_2019, SNELL_2017, LAKE_2015)


PAPER_TEXT = "against the paper's text"
QUOTED = ("number checked as quoted in a later paper's table (Lian et al., ICLR 2020, Tables 2-3); "
          "table and section numbers not checked against the paper's own text")


@dataclass(frozen=True)
class Published:
    """One published number and where it is printed.

    Attributes:
        accuracy: the number: mean test accuracy in percent (or, for sine waves, an MSE).
        ci95: the ± the paper prints after it (None: the paper prints none).
        paper: the paper it comes from.
        table: where in the paper, e.g. "Table 1" or "Table 1, bottom half".
        section: the section holding that table, e.g. "Section 5.2" or "Appendix C.1".
        row: the row of the table, as the paper names it.
        note: what the reader must know to compare it (transduction, budget), or "".
        checked: how the number, table and section were checked (the course's corrections log,
            docs/corrections-2026-12.md, records each check).
        source: "paper, table (section)": built from the fields above.
    """

    accuracy: float
    ci95: float | None
    paper: Paper
    table: str
    section: str
    row: str
    note: str = ""
    checked: str = PAPER_TEXT
    source: str = field(init=False)

    def __post_init__(self) -> None:
        text = f"{self.paper}, {self.table} ({self.section})" + (f"; {self.note}" if self.note else "")
        object.__setattr__(self, "source", text)

    def __str__(self) -> str:
        return f"{self.accuracy:.2f}" + (f" ± {self.ci95:.2f}" if self.ci95 is not None else "")


_FINN_T1 = dict(paper=FINN_2017, table="Table 1", section="Section 5.2")
_FINN_T1_MINI = dict(paper=FINN_2017, table="Table 1, bottom half", section="Section 5.2")
_NICHOL_T2 = dict(paper=NICHOL_2018, table="Table 2", section="Section 6.1")

# Sine waves, 5-shot MSE after 1, 5 and 10 fine-tuning steps: the MAML paper's only table of
# sine numbers (Appendix C.1, Table 2, beside its multi-task baselines).
SINE_5SHOT: dict[str, dict[int, Published]] = {
    name: {steps: Published(value, None, FINN_2017, "Table 2", "Appendix C.1", row)
           for steps, value in zip((1, 5, 10), values)}
    for name, row, values in (("maml", "MAML (ours)", (0.67, 0.38, 0.35)),
                              ("pretrained", "pretrain on all tasks", (2.41, 2.23, 2.19)))}

# MAML on Omniglot, Table 1 of the MAML paper, all four columns (transductive batch norm).
OMNIGLOT_MAML: dict[str, Published] = {
    f"{way}w{shot}s": Published(value, ci, row="MAML (ours)", note="transductive batch norm", **_FINN_T1)
    for (way, shot), (value, ci) in {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1),
                                     (20, 1): (95.8, 0.3), (20, 5): (98.9, 0.2)}.items()}

# Omniglot 5-way 1-shot, the algorithms of lesson 5.
OMNIGLOT_5W1S: dict[str, Published] = {
    "maml": OMNIGLOT_MAML["5w1s"],
    "fomaml": Published(98.3, 0.5, row="1st-order MAML + Transduction",
                        note="first order on Omniglot is not in the MAML paper", **_NICHOL_T2),
    "reptile": Published(97.68, 0.04, row="Reptile + Transduction", note="transductive, as the course's Reptile",
                         **_NICHOL_T2),
    "meta_sgd": Published(99.53, 0.26, LI_2017, "Table 2", "Section 4.2", "Meta-SGD", checked=QUOTED),
    "maml_pp": Published(99.47, None, ANTONIOU_2019, "Table 1", "Section 5", "MAML++", checked=QUOTED),
    "protonet": Published(98.8, None, SNELL_2017, "Table 1", "Section 3.1", "Prototypical Networks (Ours)",
                          note="trained on 60-way episodes",
                          checked="from memory of the paper's Table 1; not in the search index"),
}

# Reptile's Omniglot 5-way 1-shot figure without transduction, for the comparison it belongs to.
REPTILE_5W1S_NON_TRANSDUCTIVE = Published(95.39, 0.09, row="Reptile", note="non-transductive", **_NICHOL_T2)

# MiniImagenet 5-way: where the method stops looking easy.
MINIIMAGENET_MAML: dict[str, Published] = {
    "1-shot": Published(48.70, 1.84, row="MAML (ours)", note="transductive batch norm", **_FINN_T1_MINI),
    "5-shot": Published(63.11, 0.92, row="MAML (ours)", note="transductive batch norm", **_FINN_T1_MINI),
}
MINIIMAGENET_FOMAML: dict[str, Published] = {
    "1-shot": Published(48.07, 1.75, row="MAML, first order approx. (ours)", **_FINN_T1_MINI),
    "5-shot": Published(63.15, 0.91, row="MAML, first order approx. (ours)", **_FINN_T1_MINI),
}
MINIIMAGENET_MAML_PP: dict[str, Published] = {
    "1-shot": Published(52.15, 0.26, ANTONIOU_2019, "Table 2", "Section 5", "MAML++", checked=QUOTED),
    "5-shot": Published(68.32, 0.44, ANTONIOU_2019, "Table 2", "Section 5", "MAML++", checked=QUOTED),
}

# Lake et al. 2015: error on their 20 one-shot 20-way runs (percent), people and their model.
LAKE_RUNS_ERROR: dict[str, Published] = {
    "people": Published(4.5, None, LAKE_2015, "main text", "One-shot classification", "people",
                        checked="as the course's runs module had it; the paper's text is not in the search index"),
    "bpl": Published(3.3, None, LAKE_2015, "main text", "One-shot classification", "BPL",
                     checked="as the course's runs module had it; the paper's text is not in the search index"),
}


def all_entries() -> dict[str, Published]:
    """Every entry of this module, keyed "GROUP.name" (for tests and for the instructors' notes)."""
    entries: dict[str, Published] = {}
    groups = {"SINE_5SHOT.maml": SINE_5SHOT["maml"], "SINE_5SHOT.pretrained": SINE_5SHOT["pretrained"],
              "OMNIGLOT_MAML": OMNIGLOT_MAML, "OMNIGLOT_5W1S": OMNIGLOT_5W1S,
              "MINIIMAGENET_MAML": MINIIMAGENET_MAML, "MINIIMAGENET_FOMAML": MINIIMAGENET_FOMAML,
              "MINIIMAGENET_MAML_PP": MINIIMAGENET_MAML_PP, "LAKE_RUNS_ERROR": LAKE_RUNS_ERROR}
    for group, items in groups.items():
        for key, entry in items.items():
            entries[f"{group}.{key}"] = entry
    entries["REPTILE_5W1S_NON_TRANSDUCTIVE"] = REPTILE_5W1S_NON_TRANSDUCTIVE
    return entries


def sine_reference(name: str) -> dict[int, float]:
    """{steps: MSE} of one SINE_5SHOT row, the shape plotting's `reference=` takes."""
    return {steps: entry.accuracy for steps, entry in SINE_5SHOT[name].items()}
