#!/usr/bin/env python3
"""Convert a pickled tiktoken Encoding (nanochat's tokenizer/tokenizer.pkl) to a tokenizer.json
that vellum (and HF tokenizers) can load: the same BPE ranks, split pattern, byte-level
decoding and special tokens at the same ids.

    pip install tiktoken tokenizers transformers
    scripts/tiktoken_to_tokenizer_json.py tokenizer/tokenizer.pkl out/tokenizer.json
"""

import base64
import os
import pickle
import sys
import tempfile


def convert(encoding):
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = encoding._mergeable_ranks
    with tempfile.NamedTemporaryFile("wb", suffix=".tiktoken", delete=False) as f:
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    try:
        tok = TikTokenConverter(vocab_file=f.name, pattern=encoding._pat_str).converted()
    finally:
        os.unlink(f.name)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = sorted(encoding._special_tokens.items(), key=lambda kv: kv[1])
    for name, id_ in specials:
        if id_ != tok.get_vocab_size():
            raise SystemExit(f"special token {name} has id {id_}, not the next free id {tok.get_vocab_size()}")
        tok.add_special_tokens([AddedToken(name, normalized=False, special=True)])
    return tok


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], "rb") as f:
        encoding = pickle.load(f)
    tok = convert(encoding)
    tok.save(sys.argv[2], pretty=False)
    print(f"wrote {sys.argv[2]}: {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
