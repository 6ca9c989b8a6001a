"""Fixtures for vellum's olmOCR model cards, from olmocr itself (PyPI package `olmocr`).

    pip install olmocr pyyaml
    python tests/reference/make_olmocr_fixtures.py        # writes tests/fixtures/olmocr

- prompts.json: the prompts olmocr's builders give (the v4 no-anchoring YAML prompt of
  olmOCR-2, and build_finetuning_prompt of olmOCR v0.1 around a few anchor texts).
- anchors.json: olmocr's anchor text (get_anchor_text, the "pdfreport" engine olmOCR v0.1's
  prompts were built with) of pages of the sample PDFs, with a length limit high enough that
  olmocr's random sampling of elements does not come into play.
- answers.json: model answers, well-formed and malformed, each with what olmocr makes of it:
  YAML front matter through FrontMatterParser into PageResponse (olmOCR-2's pipeline), JSON
  through PageResponse(**json.loads(...)) (olmOCR v0.1's) — the fields and text, or that it
  failed.
"""

import argparse
import dataclasses
import json
import os

import olmocr
from olmocr.prompts import PageResponse, build_finetuning_prompt, build_no_anchoring_v4_yaml_prompt
from olmocr.prompts.anchor import get_anchor_text
from olmocr.train.front_matter import FrontMatterParser

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

ANCHORS = [
    "Page dimensions: 612.0x792.0\n[72x720]Hello world\n[Image 72x100 to 540x400]\n",
    "",
    "Text with [brackets] and \\n escapes\n",
]

FM = "---\nprimary_language: {lang}\nis_rotation_valid: {valid}\nrotation_correction: {rot}\nis_table: {table}\nis_diagram: {diagram}\n---\n{text}"
YAML_ANSWERS = [
    FM.format(lang="en", valid="True", rot=0, table="False", diagram="False", text="# Title\n\nA paragraph.\n"),
    FM.format(lang="de", valid="true", rot=0, table="true", diagram="false", text="<table><tr><td>1</td></tr></table>"),
    FM.format(lang="null", valid="False", rot=90, table="False", diagram="False", text="sideways text"),
    FM.format(lang="no", valid="True", rot=0, table="False", diagram="False", text="Norwegian? YAML says false"),
    FM.format(lang="en", valid="True", rot=270, table="False", diagram="True", text=""),
    FM.format(lang="'fr'", valid="yes", rot="'180'", table="off", diagram="no", text="quoted values"),
    FM.format(lang="en", valid="True", rot=0, table="False", diagram="False", text="text\n---\nwith a rule"),
    "---\nprimary_language: en\nis_rotation_valid: True\nrotation_correction: 45\nis_table: False\nis_diagram: False\n---\nbad rotation",
    "---\nprimary_language: en\nis_rotation_valid: True\nrotation_correction: 0\nis_table: False\n---\nmissing is_diagram",
    "---\nprimary_language: en\nis_rotation_valid: True\nrotation_correction: 0\nis_table: False\nis_diagram: False\nconfidence: 1\n---\nextra field",
    "No front matter, just text.",
    "---\nprimary_language: en\nis_rotation_valid: True\n",
    "---\nprimary_language: [en\n---\nbroken YAML",
]

JSON_ANSWERS = [
    json.dumps({"primary_language": "en", "is_rotation_valid": True, "rotation_correction": 0, "is_table": False, "is_diagram": False, "natural_text": "Plain text."}),
    json.dumps({"primary_language": None, "is_rotation_valid": False, "rotation_correction": 180, "is_table": False, "is_diagram": True, "natural_text": None}),
    json.dumps({"primary_language": "en", "is_rotation_valid": "true", "rotation_correction": 0, "is_table": False, "is_diagram": False, "natural_text": "x"}),
    json.dumps({"primary_language": "en", "is_rotation_valid": True, "rotation_correction": 0, "is_table": False, "natural_text": "x"}),
    json.dumps({"primary_language": "en", "is_rotation_valid": True, "rotation_correction": 30, "is_table": False, "is_diagram": False, "natural_text": "x"}),
    '{"primary_language": "en", "natural_text": "cut off',
]


ANCHOR_PAGES = [("edgar.pdf", 1), ("edgar-rotated90.pdf", 1), ("failing_anchor_pg4.pdf", 1), ("form_on_later_pages.pdf", 2),
                ("large_prompt_hint2.pdf", 1), ("lots_of_sci_tables.pdf", 1), ("pdftotext_two_column_issue.pdf", 1),
                ("tobacco_missed_tokens_pg1.pdf", 1), ("edgar_image.pdf", 1), ("small_page_size.pdf", 1)]


def yaml_outcome(raw):
    parser = FrontMatterParser(front_matter_class=PageResponse)
    try:
        front, text = parser._extract_front_matter_and_text(raw)
        return dataclasses.asdict(parser._parse_front_matter(front, text))
    except Exception as e:  # what olmocr's try_single_page turns into a failed attempt
        return {"error": f"{type(e).__name__}: {e}"}


def json_outcome(raw):
    try:
        return dataclasses.asdict(PageResponse(**json.loads(raw)))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "olmocr"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    prompts = {
        "olmocr": olmocr.VERSION if hasattr(olmocr, "VERSION") else getattr(olmocr, "__version__", "?"),
        "no_anchoring_v4_yaml": build_no_anchoring_v4_yaml_prompt(),
        "finetuning": [{"anchor": a, "prompt": build_finetuning_prompt(a)} for a in ANCHORS],
    }
    json.dump(prompts, open(os.path.join(args.out, "prompts.json"), "w"), indent=1, ensure_ascii=False)
    anchors = [{"pdf": pdf, "page": page, "anchor": get_anchor_text(os.path.join(ROOT, "samples", pdf), page, pdf_engine="pdfreport", target_length=1_000_000)}
               for pdf, page in ANCHOR_PAGES]
    json.dump(anchors, open(os.path.join(args.out, "anchors.json"), "w"), indent=1, ensure_ascii=False)
    answers = [{"format": "olmocr_yaml", "raw": r, "olmocr": yaml_outcome(r)} for r in YAML_ANSWERS]
    answers += [{"format": "olmocr_json", "raw": r, "olmocr": json_outcome(r)} for r in JSON_ANSWERS]
    json.dump(answers, open(os.path.join(args.out, "answers.json"), "w"), indent=1, ensure_ascii=False)
    for a in answers:
        print(a["format"], "error" if "error" in a["olmocr"] else "ok", a["olmocr"].get("error", ""))


if __name__ == "__main__":
    main()
