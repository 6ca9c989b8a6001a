"""Pixel comparison of vellum's renders with the reference renderers, on every page of the
shared real-world PDFs: FinePDFs mode against PyMuPDF with datatrove's rule, 150-DPI mode
against pdftoppm -r 150. Reports the mean absolute difference in grey levels (of 255).

    cargo build --bin ocr
    python tests/reference/compare_renders.py --ocr target/debug/ocr [--pdfs ../shared/data/pdfs]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import pymupdf
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from make_pdf_fixtures import finepdfs_pixmap  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def grey(path):
    return np.asarray(Image.open(path).convert("L")).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ocr", default=os.path.join(ROOT, "target", "debug", "ocr"))
    ap.add_argument("--pdfs", default=os.path.join(ROOT, "..", "shared", "data", "pdfs"))
    args = ap.parse_args()
    rows = {"finepdfs": [], "dpi=150": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(os.listdir(args.pdfs)):
            pdf = os.path.join(args.pdfs, name)
            doc = pymupdf.open(pdf)
            for page in range(1, doc.page_count + 1):
                for mode in rows:
                    ours = os.path.join(tmp, "ours.png")
                    subprocess.run([args.ocr, "render", pdf, "--page", str(page), "--mode", mode, "--out", ours], check=True, capture_output=True)
                    if mode == "finepdfs":
                        pix = finepdfs_pixmap(pymupdf.open(pdf)[page - 1])
                        ref = np.asarray(Image.frombytes("RGB", (pix.width, pix.height), pix.samples).convert("L")).astype(np.float64)
                    else:
                        subprocess.run(["pdftoppm", "-r", "150", "-f", str(page), "-l", str(page), "-singlefile", "-png", pdf, os.path.join(tmp, "ref")], check=True, capture_output=True)
                        ref = grey(os.path.join(tmp, "ref.png"))
                    a = grey(ours)
                    h, w = min(a.shape[0], ref.shape[0]), min(a.shape[1], ref.shape[1])
                    mad = np.abs(a[:h, :w] - ref[:h, :w]).mean()
                    rows[mode].append((name, page, a.shape, ref.shape, mad))
    for mode, rs in rows.items():
        ref_name = "PyMuPDF" if mode == "finepdfs" else "pdftoppm"
        mads = np.array([r[4] for r in rs])
        print(f"\n{mode} vs {ref_name}: {len(rs)} pages, mean {mads.mean():.2f}, median {np.median(mads):.2f}, max {mads.max():.2f}, "
              f"{(mads <= 4).sum()} of {len(rs)} pages within 4 grey levels")
        per_pdf = {}
        for name, page, ours, ref, mad in rs:
            per_pdf.setdefault(name, []).append(mad)
            if ours[:2] != ref[:2]:
                print(f"  size differs: {name} p{page} ours {ours[1]}x{ours[0]} ref {ref[1]}x{ref[0]}")
        for name, m in per_pdf.items():
            print(f"  {name:<34} {len(m):>2} pages  mean {np.mean(m):5.2f}  max {np.max(m):5.2f}")


if __name__ == "__main__":
    main()
