"""Fixtures for vellum's Qwen2.5-VL parity tests, produced by HF transformers on the CPU.

    pip install torch torchvision transformers tiktoken dashscope safetensors pillow
    python tests/reference/make_qwen2_5_vl_fixtures.py            # writes tests/fixtures/qwen2_5_vl

What it writes (all seeded; re-running reproduces it):
- tokenizer/: the real Qwen2 vocabulary rebuilt from qwen.tiktoken (gzipped tokenizer.json) and
  the ids transformers gives a set of strings with it.
- processor/: images of awkward sizes, transformers' resized uint8 image for each, its grid, and
  for images that need no resize the full pixel_values; smart_resize outputs for many sizes.
- models/<name>/: tiny Qwen2.5-VL checkpoints as save_pretrained writes them (small vocabulary:
  the first 2000 Qwen BPE tokens + the 22 special tokens), and per case the prompt ids, M-RoPE
  positions, vision tower output, last-position logits, and 32 greedy tokens from `generate`
  with their raw logprobs and top-1/top-2 margins.
"""

import argparse
import gzip
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

sys.path.insert(0, os.path.dirname(__file__))
import qwen_tokenizer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = open(os.path.join(ROOT, "models", "rolmocr", "chat_template.jinja")).read()
ROLMOCR_PROMPT = "Return the plain text representation of this document as if you were reading it naturally.\n"
SMALL_RANKS = 1000
STEPS = 32

TOKENIZER_STRINGS = [
    "Hello world",
    "Return the plain text representation of this document as if you were reading it naturally.\n",
    "  leading spaces and trailing   ",
    "Numbers: 1234567 and 3.14159, dates 2026-11-22.",
    "Ünïcödé café naïve — “quotes” ‘single’ … ½ ©",
    "中文字符和日本語のテキスト、한국어",
    "Math: $\\int_0^1 x^2\\,dx = \\frac{1}{3}$ and \\(a_{ij}\\)",
    "<table><tr><td>A</td><td>B</td></tr></table>",
    "line one\nline two\r\n\n\ttabbed\u00a0nbsp",
    "e\u0301 (decomposed) vs \u00e9 (composed)",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>",
    "emoji 🚀🔥 and zero\u200bwidth",
    "ALLCAPS don't won't I'm we'll they'd it's",
    "    def f(x):\n        return x ** 2  # comment",
]


def qwen_processor(tokenizer_file, image_processor):
    """transformers' Qwen2.5-VL processor over a tokenizer.json, with the chat template vellum ships."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)


def bench_pages(n, w, h):
    """The benchmarks' page images: the same as vellum::bench::pages(n, w, h)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    out = []
    for i in range(n):
        ink = (((x // 9 + y // 17 + i) % 7) == 0).astype(np.uint32)
        img = np.stack([240 - ink * 200, 238 - ink * 190, ((x + y + i * 31) % 256) // 4 + 180], -1).astype(np.uint8)
        out.append(Image.fromarray(img, "RGB"))
    return out


def synthetic_page(w, h, seed, mode="RGB"):
    """A page-like picture: light background, gradient, dark 'text' bars, some colour blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.float64)
    img[..., 0] = 235 + 15 * np.sin(x / max(w, 1) * 3.1)
    img[..., 1] = 230 + 20 * (y / max(h, 1))
    img[..., 2] = 225 + 10 * np.cos((x + y) / 37.0)
    for _ in range(max(3, (w * h) // 2500)):
        bw, bh = rng.integers(1, max(2, w // 4) + 1), rng.integers(1, max(2, h // 20) + 2)
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0 : y0 + bh, x0 : x0 + bw] = rng.integers(0, 90, 3)
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0 : y0 + h // 6 + 1, x0 : x0 + w // 6 + 1] = rng.integers(0, 256, 3)
    if w * h <= 200_000:  # pixel noise exercises the resampler, but big noisy PNGs bloat the fixtures
        img += rng.normal(0, 6, img.shape)
    arr = np.clip(img, 0, 255).astype(np.uint8)
    image = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        alpha = (np.linspace(0, 255, w)[None, :].repeat(h, 0)).astype(np.uint8)
        image = Image.fromarray(np.dstack([arr, alpha]), "RGBA")
    return image


def write_tokenizer_fixtures(out):
    os.makedirs(out, exist_ok=True)
    tok = qwen_tokenizer.build(qwen_tokenizer.default_tiktoken_path())
    raw = os.path.join(out, "tokenizer.json")
    tok.save(raw, pretty=False)
    hf = PreTrainedTokenizerFast(tokenizer_file=raw)
    cases = [{"text": s, "ids": hf(s)["input_ids"]} for s in TOKENIZER_STRINGS]
    assert hf("Hello world")["input_ids"] == [9707, 1879]
    with open(raw, "rb") as f, gzip.GzipFile(raw + ".gz", "wb", mtime=0) as g:
        g.write(f.read())
    os.unlink(raw)
    json.dump({"vocab_size": len(hf), "cases": cases}, open(os.path.join(out, "cases.json"), "w"), indent=1, ensure_ascii=False)
    print(f"tokenizer: {len(cases)} strings, vocabulary {len(hf)}")


def write_processor_fixtures(out):
    os.makedirs(out, exist_ok=True)
    proc = Qwen2VLImageProcessor()
    cases = [
        ("tiny", 10, 7, "RGB"),
        ("very_wide", 2000, 30, "RGB"),
        ("very_tall", 40, 1500, "RGB"),
        ("above_max_pixels", 1200, 1000, "RGB"),
        ("odd", 233, 317, "RGB"),
        ("on_grid", 84, 56, "RGB"),
        ("on_grid_wide", 196, 56, "RGB"),
        ("rgba", 97, 61, "RGBA"),
    ]
    meta = []
    for i, (name, w, h, mode) in enumerate(cases):
        img = synthetic_page(w, h, seed=100 + i, mode=mode)
        img.save(os.path.join(out, f"{name}.png"))
        # What the processor does before normalising: RGB, uint8 tensor, torchvision resize.
        from transformers.image_transforms import convert_to_rgb

        rgb = convert_to_rgb(img)
        t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()[None]
        th, tw = smart_resize(h, w, factor=28, min_pixels=proc.size["shortest_edge"], max_pixels=proc.size["longest_edge"])
        from transformers.image_utils import SizeDict

        resized = proc.resize(t, size=SizeDict(shortest_edge=proc.size["shortest_edge"], longest_edge=proc.size["longest_edge"]), resample=proc.resample, factor=28)
        assert resized.dtype == torch.uint8 and tuple(resized.shape[-2:]) == (th, tw)
        Image.fromarray(resized[0].permute(1, 2, 0).numpy(), "RGB").save(os.path.join(out, f"{name}.resized.png"))
        if mode != "RGB":
            rgb.save(os.path.join(out, f"{name}.rgb.png"))
        feats = proc(images=[img], return_tensors="pt")
        grid = feats["image_grid_thw"][0].tolist()
        # The extracted uint8 resize is exactly what the processor went on to normalise.
        again = proc(images=[Image.fromarray(resized[0].permute(1, 2, 0).numpy(), "RGB")], return_tensors="pt")
        assert torch.equal(again["pixel_values"], feats["pixel_values"]), name
        entry = {"name": name, "width": w, "height": h, "resized_width": tw, "resized_height": th, "grid_thw": grid}
        if (th, tw) == (h, w):
            save_file({"pixel_values": feats["pixel_values"].contiguous()}, os.path.join(out, f"{name}.pixel_values.safetensors"))
            entry["pixel_values"] = True
        meta.append(entry)
    sizes = []
    for h, w in [(70, 2000), (42, 98), (14, 14), (1, 200), (56, 56), (3000, 4000), (1268, 896), (1288, 980), (997, 13), (500, 700), (98, 42), (210, 322), (350, 770)]:
        for lo, hi in [(56 * 56, 28 * 28 * 1280), (56 * 28 * 28, 2048 * 28 * 28)]:
            try:
                sizes.append({"height": h, "width": w, "min_pixels": lo, "max_pixels": hi, "out": list(smart_resize(h, w, 28, lo, hi))})
            except ValueError:
                sizes.append({"height": h, "width": w, "min_pixels": lo, "max_pixels": hi, "out": None})
    json.dump({"images": meta, "smart_resize": sizes}, open(os.path.join(out, "cases.json"), "w"), indent=1)
    print(f"processor: {len(meta)} images, {len(sizes)} smart_resize cases")


def randomize(model, seed, logit_scale):
    """Replace transformers' tiny-std init with weights that make every part matter: matrices
    ~ N(0, 1/fan_in), norm scales ~ 1 ± 0.1, biases ~ N(0, 0.1); the LM head scaled so logits
    spread out and greedy choices are not near-ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif "norm" in name or "ln_q" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.lm_head.weight.mul_(logit_scale)


def tiny_config(name, vocab_size, ids, text, vision):
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab_size, rms_norm_eps=1e-6, max_position_embeddings=4096, eos_token_id=ids["<|im_end|>"], bos_token_id=ids["<|endoftext|>"], **text),
        vision_config=dict(in_channels=3, patch_size=14, temporal_patch_size=2, spatial_merge_size=2, **vision),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


MODELS = {
    # Several layers, GQA 4:2, window and full-attention blocks, windows of 4×4 merged tokens.
    "gqa_window4": dict(
        text=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}),
        vision=dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=2, window_size=112, fullatt_block_indexes=[1, 3], out_hidden_size=64),
        seed=11,
        cases=[("page_140x196", 196, 140, ROLMOCR_PROMPT), ("downscaled_333x250", 333, 250, "Read this page."), ("tall_60x300", 60, 300, ROLMOCR_PROMPT)],
    ),
    # MQA 6:1, head_dim 8, windows of 2×2 merged tokens, full attention only in the last block.
    "mqa_window2": dict(
        text=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}),
        vision=dict(depth=3, hidden_size=48, intermediate_size=40, num_heads=3, window_size=56, fullatt_block_indexes=[2], out_hidden_size=48),
        seed=23,
        cases=[("wide_150x90", 150, 90, ROLMOCR_PROMPT), ("small_30x40", 30, 40, "OCR.")],
    ),
}


def write_model_fixtures(out):
    small_tok = qwen_tokenizer.build(qwen_tokenizer.default_tiktoken_path(), ranks=SMALL_RANKS)
    n_tokens = small_tok.get_vocab_size()
    vocab_size = 1024
    assert n_tokens <= vocab_size
    for name, spec in MODELS.items():
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        model_dir = os.path.join(d, "model")
        os.makedirs(model_dir)
        small_tok.save(os.path.join(model_dir, "tokenizer.json"), pretty=False)
        ids = {t: small_tok.token_to_id(t) for t in qwen_tokenizer.SPECIAL_TOKENS}
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 4096}, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
        pp = {"min_pixels": 4 * 28 * 28, "max_pixels": 64 * 28 * 28, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "image_processor_type": "Qwen2VLImageProcessor"}
        json.dump(pp, open(os.path.join(model_dir, "preprocessor_config.json"), "w"))

        torch.manual_seed(spec["seed"])
        cfg = tiny_config(name, vocab_size, ids, spec["text"], spec["vision"])
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        randomize(model, spec["seed"], logit_scale=4.0)
        model.save_pretrained(model_dir)
        for f in os.listdir(model_dir):
            assert f in {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"}, f

        image_processor = Qwen2VLImageProcessor(min_pixels=pp["min_pixels"], max_pixels=pp["max_pixels"])
        processor = qwen_processor(os.path.join(model_dir, "tokenizer.json"), image_processor)
        tokenizer = processor.tokenizer
        cases_meta = []
        for ci, (case, w, h, prompt) in enumerate(spec["cases"]):
            img = synthetic_page(w, h, seed=spec["seed"] * 100 + ci)
            img.save(os.path.join(d, f"{case}.png"))
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(text=[text], images=[img], return_tensors="pt")
            with torch.no_grad():
                vis = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
                pos, delta = model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"])
                logits = model(**inputs).logits[0, -1]
                gc = GenerationConfig(max_new_tokens=STEPS, min_new_tokens=0, do_sample=False, eos_token_id=None, pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
                gen = model.generate(**inputs, generation_config=gc, output_logits=True, return_dict_in_generate=True)
            n_prompt = inputs["input_ids"].shape[1]
            tokens = gen.sequences[0, n_prompt:].tolist()
            assert len(tokens) == STEPS, len(tokens)
            step_logits = torch.stack(gen.logits)[:, 0].float()
            logprobs = torch.log_softmax(step_logits, -1).gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
            top2 = step_logits.topk(2, -1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
            assert torch.equal(step_logits.argmax(-1), torch.tensor(tokens))
            # The uint8 image the processor normalised: the vision test patchifies it, isolating
            # the tower from resampling differences.
            th, tw = [int(v) * 14 for v in inputs["image_grid_thw"][0, 1:]]
            rgb = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()[None]
            if (th, tw) != (h, w):
                rgb = image_processor.resize(rgb, size=image_processor.size, resample=image_processor.resample, factor=28)
            assert tuple(rgb.shape[-2:]) == (th, tw)
            Image.fromarray(rgb[0].permute(1, 2, 0).numpy(), "RGB").save(os.path.join(d, f"{case}.resized.png"))
            again = processor.image_processor(images=[Image.open(os.path.join(d, f"{case}.resized.png"))], return_tensors="pt")
            assert torch.equal(again["pixel_values"], inputs["pixel_values"]), case
            save_file({"vision_output": vis.contiguous(), "last_logits": logits.contiguous()}, os.path.join(d, f"{case}.expected.safetensors"))
            meta = {
                "case": case, "image": f"{case}.png", "prompt": prompt, "text": text,
                "input_ids": inputs["input_ids"][0].tolist(), "grid_thw": inputs["image_grid_thw"][0].tolist(),
                "positions": pos[:, 0].tolist(), "rope_delta": int(delta[0, 0]),
                "greedy_tokens": tokens, "greedy_logprobs": logprobs, "greedy_margins": margins,
                "decoded_text": tokenizer.decode(tokens, skip_special_tokens=True), "resized_image": f"{case}.resized.png",
            }
            json.dump(meta, open(os.path.join(d, f"{case}.expected.json"), "w"))
            cases_meta.append(case)
            print(f"{name}/{case}: {n_prompt} prompt tokens, grid {meta['grid_thw']}, min greedy margin {min(margins):.4f}")
        json.dump({"cases": cases_meta}, open(os.path.join(d, "cases.json"), "w"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl"))
    ap.add_argument("--only", choices=["tokenizer", "processor", "models"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.only in (None, "tokenizer"):
        write_tokenizer_fixtures(os.path.join(args.out, "tokenizer"))
    if args.only in (None, "processor"):
        write_processor_fixtures(os.path.join(args.out, "processor"))
    if args.only in (None, "models"):
        write_model_fixtures(os.path.join(args.out, "models"))


if __name__ == "__main__":
    main()
