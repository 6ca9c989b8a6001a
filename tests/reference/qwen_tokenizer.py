"""Rebuild Qwen2's tokenizer.json offline from dashscope's qwen.tiktoken.

qwen.tiktoken holds the 151,643 BPE ranks Qwen2 uses; with Qwen2's split pattern, an NFC
normalizer, byte-level decoding and the 22 special tokens appended from id 151643, transformers'
TikTokenConverter turns it into the same tokenizer.json the hub ships.

    pip install dashscope tiktoken transformers
    python tests/reference/qwen_tokenizer.py out/tokenizer.json            # the real vocabulary
    python tests/reference/qwen_tokenizer.py out/tokenizer.json --ranks 2000   # a small one for tiny test models
"""

import argparse
import os
import tempfile

from tokenizers import AddedToken, normalizers, processors
from transformers.convert_slow_tokenizer import TikTokenConverter

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# In id order after the BPE ranks; the last eight are not "special" in Qwen2.5's tokenizer.json.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
NON_SPECIAL_ADDED = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]


def default_tiktoken_path():
    import dashscope

    return os.path.join(os.path.dirname(dashscope.__file__), "resources", "qwen.tiktoken")


def build(tiktoken_path, ranks=None):
    """A tokenizers.Tokenizer; with `ranks`, only the first `ranks` BPE tokens are kept (the
    vocabulary stays closed under merges, since every token merges lower-ranked ones)."""
    path = tiktoken_path
    if ranks is not None:
        with open(tiktoken_path, "rb") as f:
            lines = [line for line in f.read().splitlines() if line]
        kept = [line for line in lines if int(line.split()[1]) < ranks]
        tmp = tempfile.NamedTemporaryFile(suffix=".tiktoken", delete=False)
        tmp.write(b"\n".join(kept) + b"\n")
        tmp.close()
        path = tmp.name
    tok = TikTokenConverter(vocab_file=path, pattern=QWEN2_PATTERN).converted()
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in NON_SPECIAL_ADDED])
    if path != tiktoken_path:
        os.unlink(path)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="where to write tokenizer.json")
    ap.add_argument("--tiktoken", default=None, help="path of qwen.tiktoken (default: dashscope's)")
    ap.add_argument("--ranks", type=int, default=None, help="keep only the first N BPE tokens")
    args = ap.parse_args()
    tok = build(args.tiktoken or default_tiktoken_path(), args.ranks)
    tok.save(args.out, pretty=False)
    print(f"wrote {args.out}: {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
