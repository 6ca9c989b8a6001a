"""A synthetic corpus for scale runs of `ocr run` (memory and throughput): N one-page PDFs, nine
in ten born-digital text pages and one in ten an image-only scan, in folders of 1000.

    python tests/reference/make_synthetic_corpus.py OUT_DIR --pages 10000
    /usr/bin/time -v target/release/ocr run OUT_DIR --model tests/fixtures/qwen2_5_vl/models/gqa_window4/model \\
        --out run --max-new-tokens 8 --max-retries 0 --max-bad-page-rate 1
    (peak RSS and pages/s are in run/00000/stats.json)
"""

import argparse
import os

import numpy as np
import pymupdf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--pages", type=int, default=10000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for i in range(args.pages):
        folder = os.path.join(args.out, f"{i // 1000:03}")
        os.makedirs(folder, exist_ok=True)
        doc = pymupdf.open()
        page = doc.new_page(width=612, height=792)
        if i % 10 == 9:
            pix = pymupdf.Pixmap(pymupdf.csRGB, 120, 160, rng.integers(0, 256, 120 * 160 * 3, dtype=np.uint8).tobytes(), False)
            page.insert_image(page.rect, pixmap=pix)
        else:
            text = "\n".join(f"Report {i}, paragraph {p}: the quick brown fox jumps over the lazy dog." for p in range(20))
            page.insert_text((72, 72), text, fontsize=10)
        doc.save(os.path.join(folder, f"{i:05}.pdf"))


if __name__ == "__main__":
    main()
