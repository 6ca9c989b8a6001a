"""Fixtures for vellum's PDF tests, from the reference tools: PyMuPDF (what datatrove renders
FinePDFs pages with) and poppler's pdftoppm (what 150-DPI dataset preparation used).

    pip install pymupdf xgboost-cpu scikit-learn numpy pillow ; apt install poppler-utils
    python tests/reference/make_pdf_fixtures.py        # writes tests/fixtures/pdf

- sizes/: one-page PDFs of many page sizes (A4, Letter, tiny, long and skinny, landscape,
  /Rotate 90 and 270, huge, a CropBox with and without /Rotate), and sizes.json with, for each, the pixel size PyMuPDF gives under
  datatrove's FinePDFs rule and the size pdftoppm gives at 150 DPI.
- pixels/: PyMuPDF's FinePDFs-mode renders (grey) of a few pages of samples/, for a
  pixel comparison in CI; compare_renders.py measures every page of every shared PDF.
- encrypted.pdf: a Letter page encrypted with AES-256, user password "secret".
- xgboost/: a small binary classifier trained on random data with vellum's routing feature
  names, saved as JSON, and the probabilities xgboost's predict_proba gives on test rows.
"""

import argparse
import json
import math
import os
import subprocess
import tempfile

import numpy as np
import pymupdf
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED_PDFS = os.path.join(ROOT, "samples")

# (name, width pt, height pt, /Rotate[, CropBox])
PAGES = [
    ("a4", 595, 842, 0), ("letter", 612, 792, 0), ("tiny", 50, 30, 0), ("skinny_tall", 40, 3000, 0),
    ("skinny_wide", 2500, 36, 0), ("landscape_a4", 842, 595, 0), ("a4_rotate90", 595, 842, 90),
    ("letter_rotate270", 612, 792, 270), ("huge", 14400, 14400, 0), ("legal", 612, 1008, 0),
    ("half_points", 300.5, 421.25, 0), ("a5", 420, 595, 0), ("square", 700, 700, 0), ("b5_rotate90", 499, 709, 90),
    ("letter_cropbox", 612, 792, 0, (37, 37, 575, 755)), ("letter_rotate90_cropbox", 612, 792, 90, (37, 37, 575, 755)),
]


def finepdfs_pixmap(page):
    """datatrove's render_page_to_base64png_pymupdf(resize_longest_side_pixels=1280,
    max_visual_tokens=2048), returning the pixmap."""
    page.remove_rotation()
    w, h = page.rect.width, page.rect.height
    factor, max_pixels = 28, 2048 * 28 * 28
    scale = 1280 / max(w, h)
    aw, ah = (w * scale, h * scale) if scale > 1 else (w, h)
    aw = max(factor, round(aw / factor) * factor)
    ah = max(factor, round(ah / factor) * factor)
    if aw * ah > max_pixels:
        s = (max_pixels / (aw * ah)) ** 0.5
        aw = max(factor, int(aw * s // factor) * factor)
        ah = max(factor, int(ah * s // factor) * factor)
    zoom = min(aw / w, ah / h)
    return page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom))


def pdftoppm_size(pdf, dpi=150):
    """The size pdftoppm renders page 1 at, or None when it cannot (it gives up on huge pages
    with "Bogus memory allocation size" and writes a 1×1 image)."""
    with tempfile.TemporaryDirectory() as d:
        run = subprocess.run(["pdftoppm", "-r", str(dpi), "-f", "1", "-l", "1", "-png", pdf, os.path.join(d, "p")], capture_output=True, text=True, check=True)
        if "Bogus memory allocation" in run.stderr:
            return None
        png = [f for f in os.listdir(d) if f.endswith(".png")][0]
        return list(Image.open(os.path.join(d, png)).size)


def olmocr_size(pdf, longest=1288):
    """The size olmOCR's render_pdf_to_base64png gives: pdftoppm, longest side 1288 (pdftoppm
    renders the MediaBox unless given -cropbox)."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["pdftoppm", "-png", "-f", "1", "-l", "1", "-scale-to", str(longest), pdf, os.path.join(d, "p")], check=True)
        png = [f for f in os.listdir(d) if f.endswith(".png")][0]
        return list(Image.open(os.path.join(d, png)).size)


def make_page_pdf(path, w, h, rotate, crop=None):
    doc = pymupdf.open()
    page = doc.new_page(width=w, height=h)
    fs = max(2, min(w, h) / 12)
    page.insert_text((min(10, w / 10), min(20, h / 3) + fs / 2), "vellum", fontsize=fs)
    page.draw_rect(pymupdf.Rect(w * 0.1, h * 0.5, w * 0.6, h * 0.9), color=(0.8, 0, 0), fill=(0.2, 0.4, 0.9))
    if crop:
        # PDF coordinates (origin bottom-left), as a PDF writer would set it.
        doc.xref_set_key(page.xref, "CropBox", "[%g %g %g %g]" % crop)
    if rotate:
        page.set_rotation(rotate)
    doc.save(path)


def write_sizes(out):
    os.makedirs(out, exist_ok=True)
    cases = []
    for name, w, h, rot, *crop in PAGES:
        pdf = os.path.join(out, f"{name}.pdf")
        make_page_pdf(pdf, w, h, rot, crop[0] if crop else None)
        pix = finepdfs_pixmap(pymupdf.open(pdf)[0])
        cases.append({"name": name, "width_pt": w, "height_pt": h, "rotate": rot,
                      "finepdfs": [pix.width, pix.height], "dpi150": pdftoppm_size(pdf)})
        if crop:
            cases[-1]["cropbox"] = list(crop[0])
            cases[-1]["olmocr"] = olmocr_size(pdf)
        print(name, cases[-1]["finepdfs"], cases[-1]["dpi150"])
    json.dump(cases, open(os.path.join(out, "sizes.json"), "w"), indent=1)
    # An encrypted document (user password "secret") for the robustness tests.
    make_page_pdf(os.path.join(out, "..", "encrypted.src.pdf"), 612, 792, 0)
    doc = pymupdf.open(os.path.join(out, "..", "encrypted.src.pdf"))
    doc.save(os.path.join(out, "..", "encrypted.pdf"), encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner-secret")
    os.unlink(os.path.join(out, "..", "encrypted.src.pdf"))


PIXEL_PAGES = [("edgar.pdf", 1), ("edgar-rotated90.pdf", 1), ("form_on_later_pages.pdf", 3), ("small_page_size.pdf", 1)]


def write_pixels(out):
    os.makedirs(out, exist_ok=True)
    meta = []
    for name, page in PIXEL_PAGES:
        doc = pymupdf.open(os.path.join(SHARED_PDFS, name))
        pix = finepdfs_pixmap(doc[page - 1])
        img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples).convert("L")
        png = f"{os.path.splitext(name)[0]}.p{page}.finepdfs.png"
        img.save(os.path.join(out, png), optimize=True)
        meta.append({"pdf": name, "page": page, "png": png})
    json.dump(meta, open(os.path.join(out, "pages.json"), "w"), indent=1)


def write_xgboost(out):
    import xgboost as xgb

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    names = ["num_pages", "garbled_ratio", "chars_mean", "image_area_ratio_max", "invisible_ratio_mean", "path_objects_mean"]
    x = np.column_stack([rng.integers(1, 50, 400), rng.random(400) * 0.01, rng.random(400) * 4000, rng.random(400), rng.random(400), rng.random(400) * 500]).astype(np.float32)
    y = ((x[:, 3] > 0.6) & (x[:, 2] < 1500) | (x[:, 1] > 0.008)).astype(int)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the default branch
    model = xgb.XGBClassifier(n_estimators=25, max_depth=4, learning_rate=0.3, random_state=0)
    model.fit(x, y)
    model.get_booster().feature_names = names
    model.get_booster().save_model(os.path.join(out, "model.json"))
    test = np.vstack([x[:40], rng.random((10, 6)).astype(np.float32) * [50, 0.01, 4000, 1, 1, 500]]).astype(np.float32)
    test[45, 2] = np.nan
    proba = model.predict_proba(test)[:, 1]
    rows = [[None if math.isnan(v) else float(v) for v in row] for row in test]
    json.dump({"feature_names": names, "rows": rows, "proba": proba.astype(float).tolist(), "xgboost": xgb.__version__},
              open(os.path.join(out, "cases.json"), "w"))
    print(f"xgboost {xgb.__version__}: {len(rows)} rows")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "pdf"))
    args = ap.parse_args()
    write_sizes(os.path.join(args.out, "sizes"))
    write_pixels(os.path.join(args.out, "pixels"))
    write_xgboost(os.path.join(args.out, "xgboost"))


if __name__ == "__main__":
    main()
