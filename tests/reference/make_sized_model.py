"""A Qwen2.5-VL-shaped checkpoint of a chosen size with random weights, for load-time and
memory measurements (`/usr/bin/time -v ocr generate ...`). Nothing to download.

    python tests/reference/make_sized_model.py OUT_DIR --hidden 1536 --layers 8 --dtype bfloat16
"""

import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vision-depth", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokenizer-dir", required=True, help="a directory with tokenizer.json etc. to copy")
    args = ap.parse_args()
    heads = args.hidden // 128
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=args.hidden, intermediate_size=args.hidden * 4, num_hidden_layers=args.layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 4), rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=args.vision_depth, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=args.hidden,
                           fullatt_block_indexes=[args.vision_depth - 1]),
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(getattr(torch, args.dtype)).eval()
    model.save_pretrained(args.out)
    for f in os.listdir(args.tokenizer_dir):
        if f.startswith("tokenizer") or f == "preprocessor_config.json":
            shutil.copy(os.path.join(args.tokenizer_dir, f), args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{n / 1e6:.0f}M parameters, {sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if f.endswith('.safetensors')) / 2**30:.2f} GiB of safetensors")


if __name__ == "__main__":
    main()
