"""Published numbers: every citation names its paper, table and section, and says how it was checked."""

from __future__ import annotations

import dataclasses
import re

import pytest

from mamlcourse.algorithms import published

ENTRIES = published.all_entries()
TABLE = re.compile(r"^(Table \d+(, (top|bottom) half)?|Fig\. \d+[A-Z]?|main text)$")
SECTION = re.compile(r"^(Section \d+(\.\d+)*|Appendix [A-Z](\.\d+)*|[A-Z][a-z-]+( [a-z-]+)*)$")


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_citation_shape(key):
    entry = ENTRIES[key]
    assert entry.paper in published.PAPERS, f"{key}: cites a paper missing from published.PAPERS"
    assert TABLE.match(entry.table), f"{key}: table {entry.table!r} is not 'Table N', 'Fig. N' or 'main text'"
    assert SECTION.match(entry.section), f"{key}: section {entry.section!r} is not 'Section N.N' or 'Appendix X.N'"
    assert entry.row.strip(), f"{key}: name the table's row"
    assert entry.checked.strip(), f"{key}: say how the number was checked"
    assert entry.accuracy > 0 and (entry.ci95 is None or 0 < entry.ci95 < entry.accuracy), f"{key}: {entry}"
    assert entry.source.startswith(f"{entry.paper}, {entry.table} ({entry.section})"), entry.source


def test_papers_are_complete():
    for paper in published.PAPERS:
        assert paper.url.startswith("https://") and paper.title and 1950 < paper.year < 2030, paper


def test_entries_serialise_with_their_source():
    """benchmarks/compare_algorithms.py stores the entries with dataclasses.asdict: the source must travel."""
    row = dataclasses.asdict(published.OMNIGLOT_5W1S["fomaml"])
    assert row["source"].startswith("Nichol, Achiam & Schulman") and "Table 2" in row["source"]


def test_what_the_papers_say():
    """The corrections of December 2026, pinned (docs/corrections-2026-12.md)."""
    assert published.OMNIGLOT_5W1S["fomaml"].paper is published.NICHOL_2018      # not in the MAML paper
    assert published.MINIIMAGENET_MAML["1-shot"].table == "Table 1, bottom half"  # not a Table 2
    assert published.OMNIGLOT_5W1S["reptile"].accuracy == 97.68                   # transductive, like ours
    assert str(published.MINIIMAGENET_MAML_PP["1-shot"]) == "52.15 ± 0.26"
    assert published.SINE_5SHOT["maml"][1].section == "Appendix C.1"
    assert published.sine_reference("maml") == {1: 0.67, 5: 0.38, 10: 0.35}
    assert str(published.OMNIGLOT_MAML["20w1s"]) == "95.80 ± 0.30"


def test_lessons_do_not_type_published_numbers():
    """Lesson prose names a paper's table; the number itself is printed from published.py, so it cannot drift."""
    import json
    from pathlib import Path

    forms = {form for entry in ENTRIES.values() for form in (f"{entry.accuracy:g}", f"{entry.accuracy:.2f}")}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + r")(?![\d])")
    typed = []
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                typed += [f"{path.name} cell {index}: {m.group(0)}" for m in pattern.finditer("".join(cell["source"]))]
    assert not typed, f"published numbers typed in lesson prose (print them from published.py instead): {typed}"
