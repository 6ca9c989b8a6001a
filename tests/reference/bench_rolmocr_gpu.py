"""RolmOCR on one GPU: vellum against HF transformers `generate` and against the machine's floor,
measured in one run on the device machine (scripts/gpu/run-kit bench calls this).

1. The machine's ceilings: an 8192³ bf16 matrix product and a 4 GiB device-to-device copy
   (median of 10 after 3 warm-ups, CUDA events; the copy counts bytes read plus written).
2. A RolmOCR-shaped checkpoint: Qwen2.5-VL-7B's config with random bf16 weights initialised by
   transformers on the GPU, the real 151,665-token Qwen vocabulary (the repo's fixture).
3. vellum: `ocr bench --workload finepdfs` (Letter pages of 1,575 image tokens, 300–750 output
   tokens each, context 8096, continuous batching).
4. transformers: the same pages, lengths and prompt through `generate` in static batches (no EOS
   with random weights, so each batch runs to its longest page).
5. The floor: per page, FLOPs over the measured matmul rate and bytes over the measured copy
   rate at vellum's concurrency; the larger bounds the time.

    python3 tests/reference/bench_rolmocr_gpu.py --ocr /tmp/ocr --out $OUT/bench.json

`--dry-run` runs the same harness on the CPU with a tiny model of the same architecture (vellum
built without `cuda`), to check the script itself before spending GPU time on it.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_qwen2_5_vl_fixtures import ROLMOCR_PROMPT as PROMPT, bench_pages, qwen_processor  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
            num_key_value_heads=4, rms_norm_eps=1e-6, max_position_embeddings=128000, eos_token_id=151645,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
# FinePDFs' bounds for RolmOCR: 56 to 2048 merged tokens.
IMAGE_SIZE = {"shortest_edge": 56 * 28 * 28, "longest_edge": 2048 * 28 * 28}
TINY_TEXT = dict(TEXT, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_parameters=dict(TEXT["rope_parameters"], mrope_section=[2, 3, 3]))
VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3, patch_size=14,
              spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
              out_hidden_size=3584, hidden_act="silu")
TINY_VISION = dict(VISION, depth=2, hidden_size=64, intermediate_size=128, num_heads=4, fullatt_block_indexes=[1],
                   out_hidden_size=64)


def timed(fn, device, warmup=3, reps=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def ceilings(device):
    n = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops = 2 * n**3 / timed(lambda: a @ b, device)
    src = torch.randn(1 << (29 if device == "cuda" else 25), device=device)  # 2 GiB on the GPU
    dst = torch.empty_like(src)
    bw = 2 * src.numel() * 4 / timed(lambda: dst.copy_(src), device)  # bytes read and written
    return flops, bw


def write_model(model_dir, text, vision, device):
    os.makedirs(model_dir, exist_ok=True)
    with gzip.open(os.path.join(ROOT, "tests/fixtures/qwen2_5_vl/tokenizer/tokenizer.json.gz"), "rb") as f, \
            open(os.path.join(model_dir, "tokenizer.json"), "wb") as g:
        shutil.copyfileobj(f, g)
    json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                              vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(model_dir, max_shard_size="5GB")
    Qwen2VLImageProcessor(size=IMAGE_SIZE).save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    vision_params = sum(p.numel() for p in model.model.visual.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return params, vision_params


def floor(workload, text, vision, params, vision_params, flops_rate, bw_rate):
    """Seconds per page no implementation beats on this machine, at vellum's concurrency."""
    text_params = params - vision_params
    prompt, gen = workload["prompt_tokens_mean"], float(np.mean(workload["new_tokens"]))
    layers, heads, kv_heads = text["num_hidden_layers"], text["num_attention_heads"], text["num_key_value_heads"]
    hd = text["hidden_size"] // heads
    h, w = smart_resize(workload["image_size"][1], workload["image_size"][0], min_pixels=IMAGE_SIZE["shortest_edge"],
                        max_pixels=IMAGE_SIZE["longest_edge"])
    patches = (h // 14) * (w // 14)
    vocab_embed = text["vocab_size"] * text["hidden_size"]
    # Matmuls: the LM (embedding lookups are free; the head runs once per generated token), the tower.
    flops = 2 * (text_params - 2 * vocab_embed) * (prompt + gen) + 2 * vocab_embed * gen + 2 * vision_params * patches
    # Attention: causal prefill, decode over the growing context, the tower's 4 full blocks.
    flops += 2 * 2 * layers * heads * hd * prompt**2 / 2
    flops += 2 * 2 * layers * heads * hd * (prompt * gen + gen**2 / 2)
    full = len(vision["fullatt_block_indexes"])
    flops += 4 * vision["hidden_size"] * patches * (patches * full + 64 * (vision["depth"] - full))
    # Bytes: weights once per decode step, shared by the batch; each step reads its page's KV.
    kv_per_token = 2 * layers * kv_heads * hd * 2
    batch = min(workload["max_num_seqs"], workload["pages"])
    weight_bytes = 2 * params
    kv_bytes = kv_per_token * (prompt * gen + gen**2 / 2) + kv_per_token * (prompt + gen)
    bytes_ = weight_bytes * gen / batch + kv_bytes
    compute = flops / flops_rate
    return {"flops_per_page": flops, "bytes_per_page": bytes_, "compute_seconds": compute,
            "memory_seconds": bytes_ / bw_rate, "seconds_per_page": max(compute, bytes_ / bw_rate), "batch": batch,
            # With a batch large enough to hide the weight reads: the machine's floor for this workload.
            "seconds_per_page_any_batch": max(compute, kv_bytes / bw_rate)}


def hf_generate(model_dir, images, lengths, batch, device):
    processor = qwen_processor(os.path.join(model_dir, "tokenizer.json"), Qwen2VLImageProcessor.from_pretrained(model_dir))
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, device_map=device).eval()
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}],
                                         add_generation_prompt=True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.time()
    for i in range(0, len(images), batch):
        imgs, lens = images[i:i + batch], lengths[i:i + batch]
        inputs = processor(text=[chat] * len(imgs), images=imgs, return_tensors="pt", padding=True).to(device)
        n = max(lens)
        gc = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        with torch.no_grad():
            out = model.generate(**inputs, generation_config=gc)
        assert out.shape[1] - inputs["input_ids"].shape[1] == n
        print(f"  transformers batch {i // batch}: {len(imgs)} pages, {n} tokens, {time.time() - start:.1f}s so far", flush=True)
    sync()
    seconds = time.time() - start
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ocr", required=True)
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--work", default=tempfile.mkdtemp(prefix="vellum-rolmocr-"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--dry-run", action="store_true", help="the harness on the CPU with a tiny model")
    args = ap.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    text, vision_cfg = (TINY_TEXT, TINY_VISION) if args.dry_run else (TEXT, VISION)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)", "torch": torch.__version__}

    flops_rate, bw_rate = ceilings(device)
    if device == "cuda":
        torch.cuda.empty_cache()  # the ceilings' buffers are gone with the call
    result["ceilings"] = {"bf16_matmul_flops": flops_rate, "copy_bytes_per_second": bw_rate}
    print(f"ceilings: bf16 matmul {flops_rate / 1e12:.0f} TFLOP/s, copy {bw_rate / 1e12:.2f} TB/s", flush=True)

    model_dir = os.path.join(args.work, "model")
    start = time.time()
    params, vision = write_model(model_dir, text, vision_cfg, device)
    result["model"] = {"parameters": params, "vision_parameters": vision, "write_seconds": time.time() - start}
    print(f"model: {params / 1e9:.2f}B parameters ({vision / 1e6:.0f}M vision), written in {time.time() - start:.0f}s", flush=True)

    start = time.time()
    run = subprocess.run([args.ocr, "bench", "--model", model_dir, "--device", device, "--workload", "finepdfs",
                          "--pages", str(args.pages), "--max-num-seqs", str(args.max_num_seqs)],
                         capture_output=True, text=True)
    print(run.stderr.strip()[-3000:], flush=True)
    if run.returncode != 0:
        result["vellum_error"] = run.stderr[-3000:]
        print(json.dumps(result, indent=1))
        if args.out:
            json.dump(result, open(args.out, "w"), indent=1)
        sys.exit(1)
    workload = json.loads(run.stdout)["finepdfs"]
    result["vellum"] = workload
    result["vellum_wall_seconds_with_load"] = time.time() - start

    w, h = workload["image_size"]
    images = bench_pages(args.pages, w, h)
    hf_seconds = hf_generate(model_dir, images, workload["new_tokens"], args.hf_batch, device)
    generated = sum(workload["new_tokens"])
    result["transformers"] = {"seconds": hf_seconds, "batch": args.hf_batch, "pages_per_second": args.pages / hf_seconds,
                              "generated_tokens_per_second": generated / hf_seconds}

    fl = floor(workload, text, vision_cfg, params, vision, flops_rate, bw_rate)
    result["floor"] = fl
    result["summary"] = {
        "vellum_pages_per_second": workload["pages_per_second"],
        "transformers_pages_per_second": args.pages / hf_seconds,
        "floor_pages_per_second": 1 / fl["seconds_per_page"],
        "floor_pages_per_second_any_batch": 1 / fl["seconds_per_page_any_batch"],
        "vellum_vs_transformers": workload["pages_per_second"] / (args.pages / hf_seconds),
        "vellum_share_of_floor": workload["pages_per_second"] * fl["seconds_per_page"],
        "prefill_tokens_per_second": workload["prefill"]["tokens_per_second"],
        "decode_tokens_per_second": workload["decode"]["tokens_per_second"],
        "kv_peak_utilisation": workload["kv_peak_utilisation"],
    }
    print(json.dumps(result["summary"], indent=1))
    if args.out:
        json.dump(result, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
