"""Published few-shot results, each with its source, to print beside the course's own numbers.

Accuracies are percentages on test tasks; ``ci95`` is the paper's ± (a 95% confidence
interval where the paper says so), ``None`` where the paper gives none. These are
other people's numbers with other budgets (60,000+ meta-iterations, tuned settings),
never targets our quick runs are expected to reach.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes:
        accuracy: mean test accuracy, percent.
        ci95: the ± the paper reports (None: not reported).
        source: paper and where in it.
    """

    accuracy: float
    ci95: float | None
    source: str

    def __str__(self) -> str:
        return f"{self.accuracy:.2f}" + (f" ± {self.ci95:.2f}" if self.ci95 is not None else "")


FINN = "Finn, Abbeel & Levine, ICML 2017, Table 1"
FINN_MINI = "Finn, Abbeel & Levine, ICML 2017, Table 2"

# Omniglot 5-way 1-shot.
OMNIGLOT_5W1S: dict[str, Published] = {
    "maml": Published(98.7, 0.4, FINN),
    "fomaml": Published(98.3, 0.5, FINN + " (first order approx.)"),
    "reptile": Published(95.39, 0.09, "Nichol, Achiam & Schulman 2018, Table 2 (non-transductive)"),
    "meta_sgd": Published(99.53, 0.26, "Li, Zhou, Chen & Li 2017, Table 2"),
    "maml_pp": Published(99.47, None, "Antoniou, Edwards & Storkey, ICLR 2019, Table 1"),
    "protonet": Published(98.8, None, "Snell, Swersky & Zemel, NeurIPS 2017, Table 1"),
}

# MiniImagenet 5-way, MAML's own numbers: where the method stops looking easy.
MINIIMAGENET_MAML: dict[str, Published] = {
    "1-shot": Published(48.70, 1.84, FINN_MINI),
    "5-shot": Published(63.11, 0.92, FINN_MINI),
}
