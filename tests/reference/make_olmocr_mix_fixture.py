"""A tiny copy of allenai/olmOCR-mix-1025 as the Hugging Face hub lays it out on disk, made from
the three unpacked samples in tests/fixtures/olmocr-format/ (edgar, untable, blanktext).

    /tmp/venv/bin/pip install pyarrow          # the only dependency (tested with pyarrow 26.0.1)
    /tmp/venv/bin/python tests/reference/make_olmocr_mix_fixture.py   # writes tests/fixtures/olmocr-mix

The output is deterministic (fixed tar headers, gzip mtime 0), so re-running it gives the same bytes.

Layout of the real dataset, and of this copy (only the 00_documents config):

    README.md's `configs:` map config `<subset>` (00_documents, 01_books, 02_loc_transcripts,
    03_national_archives), split train / eval, to ONE parquet at the repo root named
    `<subset>_<split>.parquet` -- not `<subset>/train-00000-of-00001.parquet`; that name is only
    in the hub's auto-converted `refs/convert/parquet` branch, as `<subset>/<split>/0000.parquet`.
    The PDFs are single-page extracts in `pdf_tarballs/<subset>_<split>_<NNNNN>.tar.gz` (one
    chunk series per subset and split, five-digit counter; olmocr's
    olmocr/data/repackage_olmocrmix.py writes them this way), each member named `<id>.pdf`, and
    a row's `pdf_relpath` is `pdf_tarballs/<chunk>.tar.gz:<id>.pdf`.

    tests/fixtures/olmocr-mix/
      00_documents_train.parquet                  edgar_p1, untable_p1, missing_p1, blanktext_p1
      00_documents_eval.parquet                   edgar_eval
      pdf_tarballs/00_documents_train_00000.tar.gz  edgar_p1.pdf, untable_p1.pdf, blanktext_p1.pdf
      pdf_tarballs/00_documents_eval_00000.tar.gz   edgar_eval.pdf

Rows:
- edgar_p1: edgar.md as given (is_table True, ~1,900 characters).
- untable_p1: untable.md's text cut to its first 600 characters, and is_table False, so it passes
  the 50 < len(natural_text) < 10,000 filter as a document.
- missing_p1: edgar's metadata and text, but its pdf_relpath names a member (missing_p1.pdf) that
  is NOT in the tarball: the "missing PDF" skip path.
- blanktext_p1: no text after the front matter, so natural_text is null, as in the real data
  (blank pages have a null natural_text; repackage_olmocrmix.py stores None for empty text).
- edgar_eval: edgar again, with its own member edgar_eval.pdf in the eval tarball.

Columns, in this order: id (string), url (string), page_number (int64), pdf_relpath (string),
primary_language (string), is_rotation_valid (bool), rotation_correction (int64), is_table (bool),
is_diagram (bool), natural_text (string). Known differences from the real files: they are written
by pandas, so `id` is the DataFrame index (a physical column placed last, with pandas metadata in
the schema), there is one more column, `extras` (JSON string, mostly null), real ids look like
`0000/abc-1` (so members sit in subfolders of the tarball), and url is the page's source URL (here a
placeholder). Parquet is written with pyarrow defaults except compression='snappy' (explicit),
use_dictionary=False, and one row group.
"""

import gzip
import io
import os
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SRC = os.path.join(ROOT, "tests", "fixtures", "olmocr-format")
OUT = os.path.join(ROOT, "tests", "fixtures", "olmocr-mix")
SUBSET = "00_documents"

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("page_number", pa.int64()),
    ("pdf_relpath", pa.string()),
    ("primary_language", pa.string()),
    ("is_rotation_valid", pa.bool_()),
    ("rotation_correction", pa.int64()),
    ("is_table", pa.bool_()),
    ("is_diagram", pa.bool_()),
    ("natural_text", pa.string()),
])


def read_md(name):
    """(front matter as typed values, natural text or None) of <name>.md, in olmOCR's format."""
    with open(os.path.join(SRC, name + ".md"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("---\n"), name
    end = text.find("\n---", 4)
    assert end >= 0, name
    fields = {}
    for line in text[4:end].splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if value in ("True", "False"):
            value = value == "True"
        elif value.lstrip("-").isdigit():
            value = int(value)
        fields[key.strip()] = value
    body = text[end + len("\n---"):]
    if body.startswith("\n"):
        body = body[1:]
    return fields, (body if body.strip() else None)


def row(doc_id, source, chunk, fields, natural_text):
    return {
        "id": doc_id,
        "url": f"https://example.com/olmocr-mix-fixture/{source}.pdf",
        "page_number": 1,
        "pdf_relpath": f"pdf_tarballs/{chunk}:{doc_id}.pdf",
        "primary_language": fields["primary_language"],
        "is_rotation_valid": fields["is_rotation_valid"],
        "rotation_correction": fields["rotation_correction"],
        "is_table": fields["is_table"],
        "is_diagram": fields["is_diagram"],
        "natural_text": natural_text,
    }


def write_tarball(path, members):
    """A .tar.gz of (arcname, source file) pairs with fixed headers, so the bytes are stable."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, src in members:
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue())


def write_parquet(path, rows):
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, path, compression="snappy", use_dictionary=False, row_group_size=len(rows))


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "pdf_tarballs"))

    edgar, edgar_text = read_md("edgar")
    untable, untable_text = read_md("untable")
    blank, blank_text = read_md("blanktext")
    untable = dict(untable, is_table=False)
    untable_text = untable_text[:600]
    assert blank_text is None

    train_chunk = f"{SUBSET}_train_00000.tar.gz"
    eval_chunk = f"{SUBSET}_eval_00000.tar.gz"
    train = [
        row("edgar_p1", "edgar", train_chunk, edgar, edgar_text),
        row("untable_p1", "untable", train_chunk, untable, untable_text),
        row("missing_p1", "missing", train_chunk, edgar, edgar_text),
        row("blanktext_p1", "blanktext", train_chunk, blank, blank_text),
    ]
    evals = [row("edgar_eval", "edgar", eval_chunk, edgar, edgar_text)]

    pdf = lambda name: os.path.join(SRC, name + ".pdf")
    write_tarball(os.path.join(OUT, "pdf_tarballs", train_chunk),
                  [("edgar_p1.pdf", pdf("edgar")), ("untable_p1.pdf", pdf("untable")),
                   ("blanktext_p1.pdf", pdf("blanktext"))])  # no missing_p1.pdf, on purpose
    write_tarball(os.path.join(OUT, "pdf_tarballs", eval_chunk), [("edgar_eval.pdf", pdf("edgar"))])
    write_parquet(os.path.join(OUT, f"{SUBSET}_train.parquet"), train)
    write_parquet(os.path.join(OUT, f"{SUBSET}_eval.parquet"), evals)

    total = 0
    for dirpath, _, files in sorted(os.walk(OUT)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            size = os.path.getsize(path)
            total += size
            print(f"{size:>8}  {os.path.relpath(path, ROOT)}")
    print(f"{total:>8}  total")
    assert total < 600_000, total


if __name__ == "__main__":
    main()
