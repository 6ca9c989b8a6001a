"""Table tests scored by olmocr on perturbed pages, for the differential test in
tests/olmocr_bench_score.rs: tests/fixtures/olmocr-bench-tables.json.

The sample pages with table tests (olmocr/bench/sample_data: the olmOCR pipeline's outputs) are
perturbed line by line, many times each: lines shuffled, dropped, duplicated, and table rows
split by text or blank lines, alone and mixed. Each case is stored as its recipe (indices of the
page's lines, `text.split("\\n")`, and the strings inserted between them) with every table test
of the page and olmocr's verdict on the perturbed text (`TableTest.run`). vellum rebuilds the
text from the same pipeline output in tests/fixtures/olmocr-bench/olmocr_pipeline/ and must give
every verdict.

    python3 -m venv /tmp/venv-bench && /tmp/venv-bench/bin/pip install rapidfuzz fuzzysearch tqdm beautifulsoup4
    /tmp/venv-bench/bin/python tests/reference/make_olmocr_table_fixtures.py /path/to/olmocr [--cases 30]

Table tests need no browser, so olmocr's KaTeX module is replaced by a stub before its tests
are imported.
"""

import argparse
import json
import random
import subprocess
import sys
import types
from pathlib import Path

KINDS = ["shuffle", "drop", "dup", "split", "mix"]
INSERTS = ["", "  ", "Some text between rows.", "Table 3: continued"]


def perturb(n_lines, kind, rng):
    """A recipe: line indices into the page, and strings inserted among them."""
    recipe = list(range(n_lines))
    if kind in ("shuffle", "mix"):
        rng.shuffle(recipe)
    if kind in ("drop", "mix"):
        recipe = [i for i in recipe if rng.random() > 0.15]
    if kind in ("dup", "mix"):
        recipe = [j for i in recipe for j in ([i, i] if rng.random() < 0.1 else [i])]
    if kind in ("split", "mix"):
        out = []
        for i in recipe:
            out.append(i)
            if rng.random() < 0.2:
                out.append(rng.choice(INSERTS))
        recipe = out
    return recipe


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("olmocr", type=Path, help="a checkout of allenai/olmocr")
    parser.add_argument("--cases", type=int, default=30, help="perturbations per kind and page")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "fixtures/olmocr-bench-tables.json")
    args = parser.parse_args()
    sys.path.insert(0, str(args.olmocr))
    katex = types.ModuleType("olmocr.bench.katex")
    katex.__path__ = []
    render = types.ModuleType("olmocr.bench.katex.render")
    render.compare_rendered_equations = render.render_equation = None
    sys.modules["olmocr.bench.katex"] = katex
    sys.modules["olmocr.bench.katex.render"] = render
    from olmocr.bench.tests import TableTest

    sample = args.olmocr / "olmocr/bench/sample_data"
    tests = []
    for line in filter(str.strip, open(sample / "dataset.jsonl")):
        spec = json.loads(line)
        if spec.get("type") == "table":
            tests.append(TableTest(**spec))
    cases = []
    for pdf in sorted({t.pdf for t in tests}):
        page = f"{pdf[:-4]}_pg1_repeat1.md"
        lines = (sample / "olmocr_pipeline" / page).read_text().split("\n")
        page_tests = [t for t in tests if t.pdf == pdf]
        for kind in KINDS:
            for seed in range(args.cases):
                recipe = perturb(len(lines), kind, random.Random(f"{pdf}/{kind}/{seed}"))
                text = "\n".join(lines[i] if isinstance(i, int) else i for i in recipe)
                scores = {t.id: t.run(text)[0] for t in page_tests}
                cases.append({"page": page, "kind": kind, "seed": seed, "lines": recipe, "passed": scores})
    commit = subprocess.run(["git", "-C", str(args.olmocr), "rev-parse", "HEAD"], capture_output=True, text=True)
    produced_by = {"olmocr_commit": commit.stdout.strip() or "unknown", "script": Path(__file__).name}
    args.out.write_text(json.dumps({"produced_by": produced_by, "cases": cases}, separators=(",", ":")) + "\n")
    passed = sum(v for c in cases for v in c["passed"].values())
    total = sum(len(c["passed"]) for c in cases)
    print(f"{len(cases)} cases, {total} verdicts ({passed} passed) -> {args.out}")


if __name__ == "__main__":
    main()
