"""vellum's engine against HF transformers `generate` on the same machine, same weights, same
requests, measured in one run.

The model is Qwen2.5-VL-shaped at ~135M parameters (the config is src/bench/mod.rs's BENCH_CONFIG),
with seeded random weights written by transformers; the requests are 16 distinct 532×532 page
images (≈ 400 image + prompt tokens each) generating 64 tokens. vellum runs them through
continuous batching and one at a time (`ocr bench`), in f32 and in its int8 fast mode (which
also reports its fidelity to the f32 model); transformers runs them as one padded batch, in f32
and in bf16, and the faster of the two is the anchor of the ratios.

    cargo build --release --bin ocr
    python tests/reference/bench_vs_transformers.py [--ocr target/release/ocr] [--out bench.json]

`ocr bench --peer transformers` runs this script (with itself as --ocr), so one command measures
both sides. transformers 4.57 (torch 2.4) and 5.x both run it.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from make_qwen2_5_vl_fixtures import ROLMOCR_PROMPT as PROMPT, TEMPLATE, bench_pages  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2_5_VLProcessor,
    Qwen2TokenizerFast,
)
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def qwen_processor(tokenizer_file, image_processor):
    """Qwen2.5-VL's processor over a tokenizer.json (4.x checks the tokenizer's class, 5.x does not)."""
    tokenizer = Qwen2TokenizerFast(tokenizer_file=tokenizer_file, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)


def bench_config():
    src = open(os.path.join(ROOT, "src", "bench", "mod.rs")).read()
    return json.loads(re.search(r'BENCH_CONFIG: &str = r#"(.*?)"#;', src, re.S).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ocr", default=os.path.join(ROOT, "target", "release", "ocr"))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="transformers' dtypes, comma-separated; the fastest is the anchor")
    ap.add_argument("--quantizations", default="none,int8", help="vellum's modes, comma-separated: none (f32) and/or int8")
    args = ap.parse_args()
    if "none" not in args.quantizations.split(","):
        ap.error("--quantizations must include none: vellum f32 is the reference of the ratios and of int8's fidelity")
    torch.set_num_threads(os.cpu_count())
    work = tempfile.mkdtemp(prefix="vellum-bench-")
    model_dir = os.path.join(work, "model")

    # The fixtures' tokenizer: the first 1000 Qwen BPE tokens and the 22 special tokens.
    os.makedirs(model_dir)
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl", "models", "gqa_window4", "model", "tokenizer.json"), model_dir)
    json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
    cfg = bench_config()
    text, vision = cfg.pop("text_config"), cfg.pop("vision_config")
    cfg.pop("architectures")
    if int(transformers.__version__.split(".")[0]) < 5:
        # 4.x reads M-RoPE from rope_scaling and the text config's rope_theta.
        rope = text.pop("rope_parameters")
        text["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
        text["rope_theta"] = rope["rope_theta"]
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **cfg)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.0f}M parameters in {model_dir}")

    # vellum, first (the same machine, nothing else running).
    vellum = {}
    for mode in args.quantizations.split(","):
        flags = [] if mode == "none" else ["--quantization", mode]
        run = subprocess.run([args.ocr, "bench", "--model", model_dir, "--requests", str(args.requests), "--new-tokens", str(args.new_tokens), *flags],
                             capture_output=True, text=True, check=True)
        print(f"vellum ({'f32' if mode == 'none' else mode}):\n{run.stderr.strip()}")
        vellum[mode] = json.loads(run.stdout)

    # transformers: one padded batch of the same requests.
    processor = qwen_processor(os.path.join(model_dir, "tokenizer.json"), Qwen2VLImageProcessor())
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    images = bench_pages(args.requests, 532, 532)
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}], add_generation_prompt=True)
    inputs = processor(text=[chat] * len(images), images=images, return_tensors="pt", padding=True)
    gc = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    peer = {}
    for dtype in (getattr(torch, d) for d in args.dtypes.split(",")):
        model = model.to(dtype)
        batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
        with torch.no_grad():
            start = time.time()
            out = model.generate(**batch, generation_config=gc)
            seconds = time.time() - start
        assert out.shape[1] - inputs["input_ids"].shape[1] == args.new_tokens
        name = str(dtype).removeprefix("torch.")
        peer[name] = seconds
        print(f"transformers generate ({name}), one padded batch of {len(images)}: {seconds:.1f}s, {len(images) * args.new_tokens / seconds:.1f} tokens/s")
    best = min(peer, key=peer.get)
    hf_seconds = peer[best]
    hf_tps = len(images) * args.new_tokens / hf_seconds

    # One request alone (the first two pages, each by itself) in the fastest dtype: the latency a
    # single document sees, against vellum's one-at-a-time mean.
    model = model.to(getattr(torch, best))
    singles = []
    for i in range(2):
        one = processor(text=[chat], images=[images[i]], return_tensors="pt")
        one = {k: (v.to(getattr(torch, best)) if v.is_floating_point() else v) for k, v in one.items()}
        with torch.no_grad():
            start = time.time()
            model.generate(**one, generation_config=gc)
            singles.append(time.time() - start)
    hf_single = sum(singles) / len(singles)
    print(f"transformers generate ({best}), one request alone: {hf_single:.2f}s")

    ocr = vellum["none"]["ocr"]
    result = {
        "model_parameters": params,
        "vellum": vellum["none"],
        "transformers_batched_seconds": peer,
        "transformers_anchor": best,
        "transformers_one_request_seconds": hf_single,
        "transformers_tokens_per_second": hf_tps,
        "ratios": {
            "vellum_batched_vs_one_at_a_time": ocr["speedup"],
            "vellum_batched_vs_transformers_batched": hf_seconds / ocr["batched_seconds"],
            "vellum_one_at_a_time_vs_transformers_batched": hf_seconds / ocr["sequential_seconds"],
            "vellum_one_request_vs_transformers_one_request": hf_single / (ocr["sequential_seconds"] / ocr["requests"]),
            "anchor": f"transformers {best}, the fastest of {', '.join(peer)}",
        },
        "threads": os.cpu_count(),
    }
    if "int8" in vellum:
        int8 = vellum["int8"]["ocr"]
        result["vellum_int8"] = vellum["int8"]
        result["ratios"]["vellum_int8_batched_vs_transformers_batched"] = hf_seconds / int8["batched_seconds"]
        result["ratios"]["vellum_int8_one_request_vs_transformers_one_request"] = hf_single / (int8["sequential_seconds"] / int8["requests"])
        result["ratios"]["vellum_int8_batched_vs_vellum_f32_batched"] = ocr["batched_seconds"] / int8["batched_seconds"]
        result["int8_fidelity_vs_f32"] = vellum["int8"]["fidelity"]
        print(f"int8 against f32: {json.dumps(vellum['int8']['fidelity'])}")
    print(json.dumps(result["ratios"], indent=1))
    if args.out:
        json.dump(result, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
