"""Table tests scored by olmocr on perturbed pages, for the differential tests in
tests/olmocr_bench_score.rs: tests/fixtures/olmocr-bench-tables.json and
tests/fixtures/olmocr-bench-tables-cut.json.

The sample pages with table tests (olmocr/bench/sample_data: the olmOCR pipeline's outputs) are
perturbed line by line, many times each: lines shuffled, dropped, duplicated, and table rows
split by text or blank lines, alone and mixed. Each case is stored as its recipe (indices of the
page's lines, `text.split("\\n")`, and the strings inserted between them) with every table test
of the page and olmocr's verdict on the perturbed text (`TableTest.run`). vellum rebuilds the
text from the same pipeline output in tests/fixtures/olmocr-bench/olmocr_pipeline/ and must give
every verdict.

    python3 -m venv /tmp/venv-bench && /tmp/venv-bench/bin/pip install rapidfuzz fuzzysearch tqdm beautifulsoup4
    /tmp/venv-bench/bin/python tests/reference/make_olmocr_table_fixtures.py /path/to/olmocr [--cases 30]

olmocr-bench-tables-cut.json perturbs vellum's html_tables candidate instead (the same pages with
their tables as HTML, tests/fixtures/olmocr-bench/html_tables/) and also cuts some lines at a
random character, so tags are broken mid-name or mid-attribute, `</` is left without its name and
cells and rows never close: there the verdicts are BeautifulSoup's html.parser recovering from
broken markup, which changes between Python releases (the fixture records Python's and
BeautifulSoup's versions; it was made with Python 3.11.7 and beautifulsoup4 4.15.0):

    /tmp/venv-bench/bin/python tests/reference/make_olmocr_table_fixtures.py /path/to/olmocr \
        --candidate html_tables --cut --cases 30 --out tests/fixtures/olmocr-bench-tables-cut.json

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


def cut(lines, recipe, rng):
    """Some lines cut at a random character, kept as their head ({"line": i, "to": at}) or their
    tail ({"line": i, "from": at}), offsets in characters: tags broken mid-name, mid-attribute,
    `</` left without its name, cells and rows left unclosed."""
    out = []
    for i in recipe:
        if isinstance(i, int) and lines[i] and rng.random() < 0.2:
            at = rng.randrange(len(lines[i]))
            out.append({"line": i, "to": at} if rng.random() < 0.5 else {"line": i, "from": at})
        else:
            out.append(i)
    return out


def piece(lines, r):
    if isinstance(r, int):
        return lines[r]
    if isinstance(r, dict):
        return lines[r["line"]][r.get("from", 0) : r.get("to")]
    return r


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("olmocr", type=Path, help="a checkout of allenai/olmocr")
    parser.add_argument("--cases", type=int, default=30, help="perturbations per kind and page")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "fixtures/olmocr-bench-tables.json")
    parser.add_argument(
        "--candidate",
        help="perturb this candidate of tests/fixtures/olmocr-bench (e.g. html_tables) instead of the sample's "
        "olmocr_pipeline outputs; each case then names it",
    )
    parser.add_argument("--cut", action="store_true", help="the kinds with some lines cut mid-line (cut-*) instead")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here, --cases of them")
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
        if args.candidate:
            pages = Path(__file__).parents[1] / "fixtures/olmocr-bench" / args.candidate
        else:
            pages = sample / "olmocr_pipeline"
        lines = (pages / page).read_text().split("\n")
        page_tests = [t for t in tests if t.pdf == pdf]
        for kind in [f"cut-{k}" for k in KINDS] if args.cut else KINDS:
            for seed in range(args.first_seed, args.first_seed + args.cases):
                rng = random.Random(f"{pdf}/{kind}/{seed}")
                recipe = perturb(len(lines), kind.removeprefix("cut-"), rng)
                if kind.startswith("cut-"):
                    recipe = cut(lines, recipe, rng)
                text = "\n".join(piece(lines, r) for r in recipe)
                scores = {t.id: t.run(text)[0] for t in page_tests}
                case = {"page": page, "kind": kind, "seed": seed, "lines": recipe, "passed": scores}
                if args.candidate:
                    case["candidate"] = args.candidate
                cases.append(case)
    commit = subprocess.run(["git", "-C", str(args.olmocr), "rev-parse", "HEAD"], capture_output=True, text=True)
    # The verdicts on broken HTML are html.parser's recovery, which changes between Python releases.
    import bs4

    produced_by = {
        "olmocr_commit": commit.stdout.strip() or "unknown",
        "script": Path(__file__).name,
        "options": {"candidate": args.candidate, "cut": args.cut, "cases": args.cases, "first_seed": args.first_seed},
        "python": sys.version.split()[0],
        "beautifulsoup4": bs4.__version__,
    }
    args.out.write_text(json.dumps({"produced_by": produced_by, "cases": cases}, separators=(",", ":")) + "\n")
    passed = sum(v for c in cases for v in c["passed"].values())
    total = sum(len(c["passed"]) for c in cases)
    print(f"{len(cases)} cases, {total} verdicts ({passed} passed) -> {args.out}")


if __name__ == "__main__":
    main()
