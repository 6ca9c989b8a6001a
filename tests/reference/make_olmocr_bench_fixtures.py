"""olmOCR-Bench scores as olmocr's own benchmark code computes them, for tests/olmocr_bench_score.rs.

Input: a checkout of allenai/olmocr (its `olmocr/bench/sample_data`: PDFs, test JSONLs and the
olmOCR pipeline's outputs; its `olmocr/bench/benchmark.py`, `tests.py`, `table_parsing.py`).
Output: tests/fixtures/olmocr-bench/, a benchmark folder vellum's `ocr score` reads:

- dataset.jsonl, blanks.jsonl     the sample tests, unchanged
- olmocr_pipeline/                the pipeline's outputs, unchanged
- dropped_words/, swapped_lines/, broken_tables/, repetition/, styled/, html_tables/
                                  deterministic perturbations of them (below)
- mixed_repeats/                  three repeats per page (original, dropped_words, swapped_lines),
                                  so scores are fractions of repeats
- vellum_text_layer/, tesseract/  with --extra-candidate: folders other systems wrote for the
                                  sample PDFs (`ocr bench olmocr ... --text-layer-only --tesseract
                                  --out DIR`), copied as they are
- expected.json                   {"candidates": {name: {"overall", "by_type", "tests"}}} as
                                  `ocr score --json` writes it, plus what produced it

The sample has no `format` or `footnote` tests, so tests/fixtures/olmocr-bench-markup/ is a second
benchmark folder for them: markup.jsonl, tests made here from the candidates' text (headings,
words that `styled` set in bold or italics, footnote marks), the candidate footnoted/ (the
pipeline's outputs with `<sup>1</sup>`, `[^2]` and `³` marks added), and expected.json for
footnoted/ and every candidate folder above.

tests/fixtures/olmocr-bench-fuzzy.json holds the string matching the tests rest on, case by case:
rapidfuzz's `fuzz.ratio` and `fuzz.partial_ratio` and fuzzysearch's `find_near_matches` on
random edits of the sample's text and on small-alphabet strings (where near matches crowd
together). Cases where fuzzysearch's pick among equally good matches depends on Python's string
hashing are left out.

tests/fixtures/olmocr-bench-math.json measures vellum's math approximation: pairs of an
equation (from the sample's math tests and the pipeline's outputs) and a rewrite of it (spacing,
braces, `\left`/`\right`, `\dfrac`, `\over`, primes, font commands, sub/superscript order, and
real changes: a dropped token, a changed digit or letter), each with KaTeX's verdict as olmocr's
MathTest reaches it (the same string, or `compare_rendered_equations` on the two renderings).

The PDFs are not copied (6 MB): the scorer needs only their names, and the tests name the same 21
PDFs that sample_data/pdfs holds, so vellum (which takes the PDFs the tests name when there is no
pdfs/ folder) adds the same baseline tests as benchmark.py does here with the real folder.

Scores come from olmocr's code itself: its `load_tests`, the baseline tests `main()` adds, its
`evaluate_candidate` (which finds each page's repeat files and runs each test on them), with each
test's `run` wrapped only to record pass/fail per repeat; the overall score is `main()`'s mean of
per-JSONL pass rates, computed on `evaluate_candidate`'s results.

Math tests need KaTeX in Chromium (playwright). Playwright's own browser download is not used:
the Chromium given by --chromium (default: `chromium` on PATH, e.g. Debian's package) is passed as
executable_path. Without one, math tests are left out of expected.json (`"math": "excluded"`)
and their ids listed, and the Rust test leaves them out too.

    git clone https://github.com/allenai/olmocr /tmp/olmocr
    python3 -m venv /tmp/venv-bench
    /tmp/venv-bench/bin/pip install rapidfuzz fuzzysearch beautifulsoup4 pypdf tqdm numpy playwright
    apt-get install chromium        # optional: math tests
    ocr bench olmocr /tmp/olmocr/olmocr/bench/sample_data --text-layer-only --tesseract --out /tmp/cands
    /tmp/venv-bench/bin/python tests/reference/make_olmocr_bench_fixtures.py --olmocr-src /tmp/olmocr \
        --extra-candidate /tmp/cands/vellum_text_layer --extra-candidate /tmp/cands/tesseract
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "olmocr-bench"
PIPELINE = "olmocr_pipeline"


# --- perturbations ---------------------------------------------------------------------------


def dropped_words(text: str, rng: random.Random) -> str:
    """Every word outside table rows dropped with probability 0.15."""
    out = []
    for line in text.split("\n"):
        if "|" in line:
            out.append(line)
            continue
        out.append(" ".join(w for w in line.split(" ") if rng.random() >= 0.15))
    return "\n".join(out)


def swapped_lines(text: str, rng: random.Random) -> str:
    """Neighbouring non-empty lines swapped, every other pair."""
    lines = text.split("\n")
    idx = [i for i, l in enumerate(lines) if l.strip()]
    for a, b in list(zip(idx[::2], idx[1::2]))[::2]:
        lines[a], lines[b] = lines[b], lines[a]
    return "\n".join(lines)


def broken_tables(text: str, rng: random.Random) -> str:
    """Table rows damaged: cells of some rows shuffled, a cell merged into its neighbour in others,
    and one row in five with its pipes gone (which also splits the table)."""
    out = []
    for line in text.split("\n"):
        if "|" not in line or set(line.strip()) <= set("|-: "):
            out.append(line)
            continue
        cells = line.strip().strip("|").split("|")
        r = rng.random()
        if r < 0.2:
            out.append(" ".join(c.strip() for c in cells))
        elif r < 0.5 and len(cells) > 1:
            rng.shuffle(cells)
            out.append("|" + "|".join(cells) + "|")
        elif r < 0.7 and len(cells) > 2:
            i = rng.randrange(len(cells) - 1)
            cells[i : i + 2] = [cells[i] + " " + cells[i + 1]]
            out.append("|" + "|".join(cells) + "|")
        else:
            out.append(line)
    return "\n".join(out)


def repetition(text: str, rng: random.Random) -> str:
    """The degenerate ending of a looping model: a phrase repeated many times."""
    words = [w for w in text.split() if w.isalpha()] or ["the"]
    phrase = " ".join(words[: rng.randint(1, 3)])
    return text + "\n\n" + " ".join([phrase] * rng.randint(40, 80))


def styled(text: str, rng: random.Random) -> str:
    """The same text with markdown emphasis, <br>, typographic quotes and dashes, and spacing that
    olmocr's normalisation removes (and some it does not: `_` inside words)."""
    out = []
    for line in text.split("\n"):
        if "|" in line or line.startswith("$$") or "\\(" in line:
            out.append(line)
            continue
        words = line.split(" ")
        for i, w in enumerate(words):
            r = rng.random()
            if not w:
                continue
            if r < 0.05:
                words[i] = f"**{w}**"
            elif r < 0.08:
                words[i] = f"*{w}*"
            elif r < 0.10:
                words[i] = f"<b>{w}</b>"
            elif r < 0.11:
                words[i] = w + "<br>"
        line = " ".join(words).replace("'", "\u2019").replace(" - ", " \u2013 ")
        out.append(line.replace(". ", ".  ", 1))
    return "\n".join(out)


def html_tables(text: str, rng: random.Random) -> str:
    """Markdown tables rewritten as HTML tables: the header row in <thead> with <th> cells, entity-
    escaped text, and where a row repeats its left neighbour's text, a colspan."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if "|" in lines[i] and i + 1 < len(lines) and "|" in lines[i + 1]:
            block = []
            while i < len(lines) and "|" in lines[i]:
                block.append(lines[i])
                i += 1
            rows = [
                [c.strip() for c in l.strip().strip("|").split("|")] for l in block if not set(l.strip()) <= set("|-: ")
            ]
            html = ["<table>"]
            for r, cells in enumerate(rows):
                tag = "th" if r == 0 else "td"
                merged = []
                for c in cells:
                    if merged and merged[-1][0] == c and c:
                        merged[-1][1] += 1
                    else:
                        merged.append([c, 1])
                tds = "".join(
                    f"<{tag}{f' colspan={n}' if n > 1 else ''}>{c.replace('&', '&amp;').replace('<', '&lt;')}</{tag}>"
                    for c, n in merged
                )
                row = f"<tr>{tds}</tr>"
                html.append(f"<thead>{row}</thead><tbody>" if r == 0 else row)
            html.append("</tbody></table>")
            out.append("\n".join(html))
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def footnoted(text: str, rng: random.Random):
    """Footnote marks after a word of the first three prose lines (`<sup>1</sup>`, `[^2]` with its
    definition at the end, `³`), and the (marker, words before, words after) of each."""
    lines = text.split("\n")
    prose = [i for i, l in enumerate(lines) if len(l.split(" ")) >= 10 and not set(l) & set("|$\\*_#<")]
    marks = []
    for k, i in enumerate(prose[:3]):
        words = lines[i].split(" ")
        j = rng.randrange(3, len(words) - 4)
        marks.append((str(k + 1), " ".join(words[j - 2 : j + 1]), " ".join(words[j + 1 : j + 4])))
        words[j] += ["<sup>1</sup>", "[^2]", "\u00b3"][k]
        lines[i] = " ".join(words)
    if len(marks) > 1:
        lines += ["", "[^2]: A note added for the footnote tests."]
    return "\n".join(lines), marks


def markup_tests(bench: Path):
    """`format` and `footnote` tests made from the candidates' text, and the footnoted/ folder."""
    tests = []

    def add(rel: Path, **fields):
        m = re.match(r"(.*)_pg(\d+)_repeat\d+\.md$", rel.name)
        pdf = str(rel.parent / f"{m.group(1)}.pdf") if str(rel.parent) != "." else f"{m.group(1)}.pdf"
        tests.append({"pdf": pdf, "page": int(m.group(2)), "id": f"markup_{len(tests):03d}", **fields})

    pipeline = sorted(p.relative_to(bench / PIPELINE) for p in (bench / PIPELINE).rglob("*.md"))
    for rel in pipeline:
        text = (bench / PIPELINE / rel).read_text(encoding="utf-8")
        styled_text = (bench / "styled" / rel).read_text(encoding="utf-8")
        for heading in re.findall(r"^#+ (.+)$", text, re.M)[:2]:
            add(rel, type="format", format="heading", text=heading)
        for bold in re.findall(r"\*\*(\w{4,})\*\*|<b>(\w{4,})</b>", styled_text)[:2]:
            word = bold[0] or bold[1]
            add(rel, type="format", format="bold", text=word)
            add(rel, type="format", format="bold", text=word.upper(), case_sensitive=False)
        for italic in re.findall(r"(?<!\*)\*(\w{5,})\*(?!\*)", styled_text)[:2]:
            add(rel, type="format", format="italic", text=italic)
            add(rel, type="format", format="italic", text=italic[:-1] + "#", max_diffs=1)
        for italic in re.findall(r"(?<!\*)\*([A-Z][\w ]{8,})\*(?!\*)", text)[:1]:
            add(rel, type="format", format="italic", text=italic)
        marked, marks = footnoted(text, random.Random(f"footnoted/{rel}"))
        dst = bench / "footnoted" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(marked, encoding="utf-8")
        for marker, before, after in marks:
            add(rel, type="footnote", marker=marker, appears_before_marker=before, appears_after_marker=after)
            add(rel, type="footnote", marker=marker, appears_before_marker="words that are not there")
        if marks:
            add(rel, type="footnote", marker="9")
    return tests


PERTURBATIONS = {
    "dropped_words": dropped_words,
    "swapped_lines": swapped_lines,
    "broken_tables": broken_tables,
    "repetition": repetition,
    "styled": styled,
    "html_tables": html_tables,
}


def write_candidates(sample: Path, bench: Path):
    """The sample's pipeline outputs and their perturbed copies, as candidate folders of `bench`."""
    originals = sorted(p.relative_to(sample / PIPELINE) for p in (sample / PIPELINE).rglob("*.md"))
    for rel in originals:
        text = (sample / PIPELINE / rel).read_text(encoding="utf-8")
        dst = bench / PIPELINE / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        variants = {}
        for name, fn in PERTURBATIONS.items():
            variants[name] = fn(text, random.Random(f"{name}/{rel}"))
            dst = bench / name / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(variants[name], encoding="utf-8")
        stem = re.sub(r"_repeat\d+\.md$", "", rel.name)
        for k, content in enumerate([text, variants["dropped_words"], variants["swapped_lines"]], start=1):
            dst = bench / "mixed_repeats" / rel.parent / f"{stem}_repeat{k}.md"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(content, encoding="utf-8")
    return [PIPELINE, *PERTURBATIONS, "mixed_repeats"]


# --- string matching, case by case -----------------------------------------------------------


def fuzzy_cases(sample: Path):
    from fuzzysearch import find_near_matches
    from fuzzysearch.common import group_matches
    from fuzzysearch.levenshtein import find_near_matches_levenshtein
    from rapidfuzz import fuzz

    rng = random.Random("fuzzy")
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted((sample / PIPELINE).rglob("*.md"))).split()

    def edit(s, n, alphabet):
        s = list(s)
        for _ in range(n):
            i = rng.randrange(len(s) + 1)
            op = rng.random()
            if op < 0.34 and i < len(s):
                s[i] = rng.choice(alphabet)
            elif op < 0.67:
                s.insert(i, rng.choice(alphabet))
            elif i < len(s):
                del s[i]
        return "".join(s)

    def unambiguous(pattern, text, k):
        groups = group_matches(find_near_matches_levenshtein(pattern, text, k))
        for g in groups:
            keys = sorted((m.dist, -(m.end - m.start)) for m in g)
            if len(keys) > 1 and keys[0] == keys[1] and len({(m.start, m.end) for m in g if (m.dist, -(m.end - m.start)) == keys[0]}) > 1:
                return False
        return True

    cases, ambiguous = [], 0
    while len(cases) < 400:
        if len(cases) % 2:
            alphabet = "abc d"
            text = "".join(rng.choices(alphabet, k=rng.randint(5, 60)))
            k = rng.randint(1, 3)
            pattern = edit(text[rng.randrange(len(text)) :][: rng.randint(2 * k + 1, 14)], rng.randint(0, k + 1), alphabet) or "a"
        else:
            start = rng.randrange(len(words) - 60)
            text = " ".join(words[start : start + rng.randint(10, 60)])
            k = rng.randint(1, 4)
            i = rng.randrange(len(text) - 10)
            pattern = edit(text[i : i + rng.randint(2 * k + 2, 80)], rng.randint(0, k + 2), "abcdefgh ")
        if len(pattern) < 2 * k:
            continue
        if not unambiguous(pattern, text, k):
            ambiguous += 1
            continue
        cases.append(
            {
                "pattern": pattern,
                "text": text,
                "max_l_dist": k,
                "near_matches": [[m.start, m.end] for m in find_near_matches(pattern, text, max_l_dist=k)],
                # As text: serde_json's default float parsing may be off by one ulp.
                "ratio": repr(fuzz.ratio(pattern, text)),
                "partial_ratio": repr(fuzz.partial_ratio(pattern, text)),
            }
        )
    out = REPO / "tests" / "fixtures" / "olmocr-bench-fuzzy.json"
    out.write_text(json.dumps({"cases": cases, "ambiguous_left_out": ambiguous}, ensure_ascii=False, indent=0) + "\n")


# --- math: KaTeX's verdicts on rewritten equations ---------------------------------------------


MATH_REWRITES = {
    "same": lambda e, rng: e,
    "spaces": lambda e, rng: re.sub(r"\s*([=+<>,])\s*", r" \1 ", e),
    "fewer_braces": lambda e, rng: re.sub(r"([_^])\{(\w)\}", r"\1\2", e),
    "more_braces": lambda e, rng: re.sub(r"([_^])(\w)", r"\1{\2}", e),
    "no_left_right": lambda e, rng: re.sub(r"\\(left|right)(?![a-zA-Z])", "", e),
    "dfrac": lambda e, rng: e.replace("\\frac", "\\dfrac"),
    "over": lambda e, rng: re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"{\1 \\over \2}", e),
    "prime": lambda e, rng: e.replace("^{\\prime}", "'"),
    "font": lambda e, rng: re.sub(r"\\(mathrm|operatorname|text)\{", r"\\mathrm{", e),
    "subsup_order": lambda e, rng: re.sub(r"_(\{[^{}]*\}|\w)\^(\{[^{}]*\}|\w)", r"^\2_\1", e),
    "context": lambda e, rng: "y + " + e + " = 0",
    "drop_token": lambda e, rng: _drop_token(e, rng),
    "digit": lambda e, rng: re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), e, count=1),
    "letter": lambda e, rng: re.sub(r"(?<![\\a-zA-Z])([a-z])(?![a-zA-Z])", lambda m: "q" if m.group() != "q" else "w", e, count=1),
}


def _drop_token(e, rng):
    tokens = re.findall(r"\\[a-zA-Z]+|\\.|[^\s{}]", e)
    if len(tokens) < 3:
        return e
    victim = tokens[rng.randrange(len(tokens))]
    i = e.find(victim)
    return e[:i] + e[i + len(victim) :]


def math_cases(sample: Path, bench: Path):
    from olmocr.bench.katex.render import compare_rendered_equations, render_equation

    rng = random.Random("math")
    equations = [json.loads(l)["math"] for l in (sample / "dataset.jsonl").read_text().splitlines() if '"math"' in l]
    for p in sorted((bench / PIPELINE).rglob("*.md")):
        for e in re.findall(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", p.read_text(encoding="utf-8"), re.S):
            e = "".join(e).strip()
            if 6 <= len(e) <= 200:
                equations.append(e)
    equations = list(dict.fromkeys(equations))
    cases = []
    for reference in equations:
        ref_render = render_equation(reference)
        if ref_render is None or ref_render.error:
            continue
        for name, rewrite in MATH_REWRITES.items():
            hypothesis = rewrite(reference, rng)
            if name != "same" and hypothesis == reference:
                continue
            hyp_render = render_equation(hypothesis)
            katex = hypothesis == reference or bool(
                hyp_render and not hyp_render.error and compare_rendered_equations(ref_render, hyp_render)
            )
            cases.append({"variant": name, "reference": reference, "hypothesis": hypothesis, "katex": katex})
    out = REPO / "tests" / "fixtures" / "olmocr-bench-math.json"
    out.write_text(json.dumps({"cases": cases}, ensure_ascii=False, indent=0) + "\n")


# --- olmocr's scoring ------------------------------------------------------------------------


def use_chromium(path):
    """Make olmocr's `p.chromium.launch()` start the given Chromium instead of playwright's own."""
    from playwright.sync_api._generated import BrowserType

    launch = BrowserType.launch

    def patched(self, *args, **kwargs):
        kwargs.setdefault("executable_path", path)
        return launch(self, *args, **kwargs)

    BrowserType.launch = patched


def score(bench: Path, candidates, math_ok: bool):
    from olmocr.bench import benchmark, tests as olmtests

    pdf_folder = bench / "pdfs"
    pdf_basenames = sorted(str(p.relative_to(pdf_folder)) for p in pdf_folder.rglob("*.pdf"))
    all_tests, test_to_jsonl, excluded = [], {}, []
    for jsonl in sorted(bench.glob("*.jsonl")):
        if math_ok:
            loaded = olmtests.load_tests(str(jsonl))
        else:
            # MathTest renders its equation on construction; without a browser, leave math out.
            loaded = []
            for line in jsonl.read_text().splitlines():
                if not line.strip():
                    continue
                data = json.loads(line)
                if data["type"] == "math":
                    excluded.append(data["id"])
                else:
                    loaded.append(olmtests.load_single_test(data))
        for t in loaded:
            test_to_jsonl[t.id] = jsonl.name
        all_tests.extend(loaded)
    # benchmark.main(): a baseline test for each PDF without one.
    for pdf in pdf_basenames:
        if not any(t.type == "baseline" for t in all_tests if t.pdf == pdf):
            all_tests.append(olmtests.BaselineTest(id=f"{pdf}_baseline", pdf=pdf, page=1, type="baseline"))
            test_to_jsonl[all_tests[-1].id] = "baseline"

    results = {}
    for name in candidates:
        outcomes = {t.id: [] for t in all_tests}
        for t in all_tests:
            run = type(t).run.__get__(t)

            def recorded(md, run=run, id=t.id):
                passed, explanation = run(md)
                outcomes[id].append(bool(passed))
                return passed, explanation

            object.__setattr__(t, "run", recorded)
        overall, _, errors, _, breakdown, _, test_results = benchmark.evaluate_candidate(
            str(bench / name), all_tests, pdf_basenames
        )
        for t in all_tests:
            object.__delattr__(t, "run")
        assert not errors, errors
        # benchmark.main(): the overall score is the mean over JSONL files of the share of tests
        # that pass (on a majority of repeats).
        per_jsonl = {}
        for t in all_tests:
            group = per_jsonl.setdefault(test_to_jsonl[t.id], [0, 0])
            group[0] += 1
            group[1] += any(tt.id == t.id and passed for tt, passed, _ in test_results[t.pdf][t.page])
        tests = {tid: sum(o) / len(o) for tid, o in outcomes.items()}
        by_type = {}
        for kind, scores in sorted(breakdown.items()):
            # evaluate_candidate's lists come in thread completion order: average them in test
            # order, so that a re-run writes the same bits.
            in_order = [tests[t.id] for t in all_tests if t.type == kind]
            assert sorted(scores) == sorted(in_order), (kind, scores, in_order)
            by_type[kind] = sum(in_order) / len(in_order)
        results[name] = {
            "overall": sum(p / n for n, p in per_jsonl.values()) / len(per_jsonl),
            "by_type": by_type,
            "tests": dict(sorted(tests.items())),
        }
    return results, excluded


def make_markup_fixture(sample: Path, candidates, math_ok: bool):
    """tests/fixtures/olmocr-bench-markup: format and footnote tests on every candidate."""
    out = REPO / "tests" / "fixtures" / "olmocr-bench-markup"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp)
        for name in candidates:
            shutil.copytree(OUT / name, bench / name)
        tests = markup_tests(bench)
        shutil.copytree(bench / "footnoted", out / "footnoted")
        (out / "markup.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tests))
        shutil.copy(out / "markup.jsonl", bench / "markup.jsonl")
        # Only the PDFs the tests name, as vellum takes them from a folder without pdfs/.
        for pdf in {t["pdf"] for t in tests}:
            (bench / "pdfs" / pdf).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample / "pdfs" / pdf, bench / "pdfs" / pdf)
        results, _ = score(bench, [*candidates, "footnoted"], math_ok)
    (out / "expected.json").write_text(json.dumps({"candidates": results}, indent=1) + "\n")
    for name, r in results.items():
        print(f"markup {name:16s} " + "  ".join(f"{k} {v * 100:.1f}" for k, v in r["by_type"].items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--olmocr-src", required=True, type=Path, help="a checkout of allenai/olmocr")
    ap.add_argument("--chromium", default=shutil.which("chromium"), help="Chromium for the math tests")
    ap.add_argument("--extra-candidate", type=Path, action="append", default=[], help="another candidate folder")
    args = ap.parse_args()

    src = args.olmocr_src.resolve()
    sample = src / "olmocr" / "bench" / "sample_data"
    # KaTeX renderings are cached under ~/.cache/olmocr: start from an empty cache.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="olmocr-home-")
    sys.path.insert(0, str(src))

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for jsonl in sorted(sample.glob("*.jsonl")):
        shutil.copy(jsonl, OUT / jsonl.name)
    candidates = write_candidates(sample, OUT)
    for extra in args.extra_candidate:
        shutil.copytree(extra, OUT / extra.name)
        candidates.append(extra.name)

    math_ok = bool(args.chromium)
    if math_ok:
        use_chromium(args.chromium)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp)
        for item in OUT.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy)(item, bench / item.name)
        shutil.copytree(sample / "pdfs", bench / "pdfs")
        results, excluded = score(bench, candidates, math_ok)
        if math_ok:
            math_cases(sample, bench)

    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    expected = {
        "produced_by": {
            "olmocr_commit": commit or "unknown",
            "rapidfuzz": version("rapidfuzz"),
            "fuzzysearch": version("fuzzysearch"),
            "beautifulsoup4": version("beautifulsoup4"),
            "math": "rendered with KaTeX in Chromium" if math_ok else "excluded",
            "math_excluded_ids": excluded,
        },
        "candidates": results,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    make_markup_fixture(sample, candidates, math_ok)
    fuzzy_cases(sample)
    for name, r in results.items():
        print(f"{name:16s} overall {r['overall'] * 100:5.1f}%  " + "  ".join(f"{k} {v * 100:.1f}" for k, v in r["by_type"].items()))


if __name__ == "__main__":
    main()
