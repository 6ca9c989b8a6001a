"""vellum's engine against HF transformers `generate` (and, optionally, llama.cpp's server) on the
same machine, same weights, same requests, measured in one run.

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

With `--llama-cpp DIR` (a llama.cpp source tree with a CPU build of llama-server in
DIR/build/bin) llama.cpp runs the same requests too, after transformers:

    cmake -S DIR -B DIR/build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
        -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build DIR/build --target llama-server -j
    python tests/reference/bench_vs_transformers.py --llama-cpp DIR --out bench.json

DIR's convert_hf_to_gguf.py turns the saved model into GGUF files beside it: the text model in
f16 and in Q8_0, the vision encoder and merger (`--mmproj`) in f16. For each text file,
llama-server starts with one slot per request (continuous batching, as vellum's engine), the
RolmOCR chat template and as many threads as CPUs; the 16 requests go concurrently to its
OpenAI-compatible /v1/chat/completions (the page as a PNG data URL, temperature 0, 64 tokens
with EOS ignored, no prompt cache), then the first two pages each alone. The JSON gets
"llama_cpp" (seconds, tokens/s and the prompt tokens llama.cpp counted per request), the ratios
vellum f32 against llama.cpp f16 and vellum int8 against llama.cpp Q8_0, and each side's
prompt tokens per request ("prompt_tokens": the image resize and chat template decide them). A
GGUF type whose server fails to start is tried again with `--no-repack` (Q8_0 crashes in
llama.cpp's AMX buffers on an Intel Xeon; "server_flags" says which ran); if that fails too, it
is reported in "llama_cpp_failed" with the end of its log, and the run goes on.
"""

import argparse
import atexit
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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
TEMPLATE_FILE = os.path.join(ROOT, "models", "rolmocr", "chat_template.jinja")

# convert_hf_to_gguf.py, run through two patches and unchanged otherwise:
# - it names the BPE pre-tokenizer by hashing the tokens of a test string; the fixtures'
#   vocabulary (Qwen's first 1000 merges) splits that string differently from Qwen's full one, so
#   the hash is unknown and the converter stops. The pre-tokenizer regex is Qwen2's: named here.
# - Qwen2-VL's vocabulary tries sentencepiece first and falls back to BPE only when the module is
#   there and finds no tokenizer.model; the model has only tokenizer.json, so BPE directly (no
#   sentencepiece needed).
CONVERT = """
import sys
llama_dir, *argv = sys.argv[1:]
sys.path.insert(0, llama_dir)
import convert_hf_to_gguf
from conversion.base import TextModel
from conversion.qwenvl import Qwen2VLModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
Qwen2VLModel.set_vocab = TextModel._set_vocab_gpt2
sys.argv = ["convert_hf_to_gguf.py", *argv]
convert_hf_to_gguf.main()
"""


def qwen_processor(tokenizer_file, image_processor):
    """Qwen2.5-VL's processor over a tokenizer.json (4.x checks the tokenizer's class, 5.x does not)."""
    tokenizer = Qwen2TokenizerFast(tokenizer_file=tokenizer_file, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)


def bench_config():
    src = open(os.path.join(ROOT, "src", "bench", "mod.rs")).read()
    return json.loads(re.search(r'BENCH_CONFIG: &str = r#"(.*?)"#;', src, re.S).group(1))


def write_model(model_dir):
    """BENCH_CONFIG's model with seeded random weights and the fixtures' tokenizer, saved to model_dir."""
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
    return model


def to_gguf(llama_dir, model_dir, out, *flags):
    run = subprocess.run([sys.executable, "-c", CONVERT, llama_dir, model_dir, "--outfile", out, *flags], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py {' '.join(flags)} failed:\n{run.stderr[-3000:]}")


# llama-server listens on loopback: no proxy from the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with LOCAL.open(request, timeout=3600) as r:
        return json.load(r)


@contextlib.contextmanager
def llama_server(binary, model, mmproj, slots, ctx, log_path, extra=()):
    """A llama-server on a free loopback port, yielding its URL once /health answers; killed on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [binary, "-m", model, "--mmproj", mmproj, "--host", "127.0.0.1", "--port", str(port),
               # One slot per request, each with room for its prompt and new tokens (-c is split
               # evenly between the slots), and all the CPUs, as vellum's engine has.
               "--parallel", str(slots), "-c", str(ctx), "--threads", str(os.cpu_count()),
               # The chat template transformers and vellum use (it adds the system turn).
               "--jinja", "--chat-template-file", TEMPLATE_FILE,
               # No host-memory prompt cache: every page is new, as in vellum's and transformers' runs.
               "--cache-ram", "0", "--no-webui", *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 600
            while True:
                if proc.poll() is not None:
                    log.flush()
                    tail = open(log_path, errors="replace").read().splitlines()[-15:]
                    raise RuntimeError(f"llama-server exited with {proc.returncode}; its log ends:\n" + "\n".join(tail))
                try:
                    with LOCAL.open(url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass  # not listening yet, or 503 while the model loads
                if time.time() > deadline:
                    raise RuntimeError(f"llama-server not ready after 600s: see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def llama_cpp_chat(url, png, new_tokens):
    """One page through /v1/chat/completions; returns the prompt tokens llama.cpp counted."""
    body = {
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}},
            {"type": "text", "text": PROMPT},
        ]}],
        "temperature": 0,
        "max_tokens": new_tokens,
        "ignore_eos": True,
        "cache_prompt": False,
    }
    usage = post(url + "/v1/chat/completions", body)["usage"]
    assert usage["completion_tokens"] == new_tokens, usage
    return usage["prompt_tokens"]


def llama_cpp_bench(llama_dir, model_dir, images, new_tokens, prompt_len, work):
    """llama.cpp's server on the saved model, in f16 and Q8_0: the batch, then two pages alone."""
    # The converter reads the image mean and std from the preprocessor config; transformers' side
    # used Qwen2VLImageProcessor's defaults, so those are written.
    Qwen2VLImageProcessor().save_pretrained(model_dir)
    mmproj = os.path.join(work, "mmproj-f16.gguf")
    to_gguf(llama_dir, model_dir, mmproj, "--mmproj", "--outtype", "f16")
    pngs = []
    for image in images:
        buf = io.BytesIO()
        image.save(buf, format="PNG")  # lossless: llama.cpp decodes the same pixels
        pngs.append(base64.b64encode(buf.getvalue()).decode())
    # Each slot holds one request: its prompt and new tokens, rounded up to 256 for the margin
    # llama.cpp's own image resize might need.
    slot = -(-(prompt_len + new_tokens) // 256) * 256
    out, failed = {}, {}
    for quant in ("f16", "q8_0"):
        text = os.path.join(work, f"text-{quant}.gguf")
        to_gguf(llama_dir, model_dir, text, "--outtype", quant)
        binary = os.path.join(llama_dir, "build", "bin", "llama-server")
        # On an Intel Xeon with AMX, llama-server 0c1e570 crashes loading Q8_0 weights into its
        # repacked (AMX) buffers; without repacking it runs, so that is the second try.
        for extra in ((), ("--no-repack",)):
            log_path = os.path.join(work, f"llama-server-{quant}{''.join(extra)}.log")
            try:
                with llama_server(binary, text, mmproj, len(pngs), slot * len(pngs), log_path, extra) as url:
                    start = time.time()
                    with ThreadPoolExecutor(len(pngs)) as pool:
                        prompt_tokens = list(pool.map(lambda png: llama_cpp_chat(url, png, new_tokens), pngs))
                    seconds = time.time() - start
                    singles = []
                    for png in pngs[:2]:
                        start = time.time()
                        llama_cpp_chat(url, png, new_tokens)
                        singles.append(time.time() - start)
                failed.pop(quant, None)
                break
            except RuntimeError as e:
                # One GGUF type failing leaves the other's numbers.
                print(f"llama.cpp ({quant}, flags {list(extra)}) failed: {e}", file=sys.stderr)
                failed[quant] = str(e)
        if quant in failed:
            continue
        out[quant] = {
            "batched_seconds": seconds,
            "batched_tokens_per_second": len(pngs) * new_tokens / seconds,
            "one_request_seconds": sum(singles) / len(singles),
            "prompt_tokens": prompt_tokens,
            "server_flags": list(extra),
        }
        print(f"llama.cpp ({quant}), {len(pngs)} concurrent requests: {seconds:.1f}s, {len(pngs) * new_tokens / seconds:.1f} tokens/s; "
              f"one request alone: {out[quant]['one_request_seconds']:.2f}s; prompt tokens {sorted(set(prompt_tokens))}")
    return out, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ocr", default=os.path.join(ROOT, "target", "release", "ocr"))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="transformers' dtypes, comma-separated; the fastest is the anchor")
    ap.add_argument("--quantizations", default="none,int8", help="vellum's modes, comma-separated: none (f32), int8 (--quantization int8), bf16-linear (--quantization bf16), bf16 (--dtype bf16)")
    ap.add_argument("--llama-cpp", default=None, metavar="DIR", help="also run llama.cpp: a source tree with build/bin/llama-server")
    args = ap.parse_args()
    if "none" not in args.quantizations.split(","):
        ap.error("--quantizations must include none: vellum f32 is the reference of the ratios and of int8's fidelity")
    torch.set_num_threads(os.cpu_count())
    work = tempfile.mkdtemp(prefix="vellum-bench-")
    # The model and its GGUF files take ~1 GB: gone when the script ends, however it ends.
    atexit.register(shutil.rmtree, work, True)
    model_dir = os.path.join(work, "model")
    model = write_model(model_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.0f}M parameters in {model_dir}")

    # vellum, first (the same machine, nothing else running).
    vellum = {}
    for mode in args.quantizations.split(","):
        flags = {"none": [], "bf16": ["--dtype", "bf16"], "bf16-linear": ["--quantization", "bf16"]}.get(mode, ["--quantization", mode])
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
        # Image + prompt tokens of one request, each side's count (transformers': the padded batch's).
        "prompt_tokens": {"vellum": ocr["prompt_tokens_mean"], "transformers": inputs["input_ids"].shape[1]},
    }
    # The fast modes against transformers and vellum f32 (int8 against llama.cpp's Q8_0 below).
    for mode in ("int8", "bf16-linear"):
        if mode not in vellum:
            continue
        key, fast = mode.replace("-", "_"), vellum[mode]["ocr"]
        result[f"vellum_{key}"] = vellum[mode]
        result["ratios"][f"vellum_{key}_batched_vs_transformers_batched"] = hf_seconds / fast["batched_seconds"]
        result["ratios"][f"vellum_{key}_one_request_vs_transformers_one_request"] = hf_single / (fast["sequential_seconds"] / fast["requests"])
        result["ratios"][f"vellum_{key}_batched_vs_vellum_f32_batched"] = ocr["batched_seconds"] / fast["batched_seconds"]
        result[f"{key}_fidelity_vs_f32"] = vellum[mode]["fidelity"]
        print(f"{mode} against f32: {json.dumps(vellum[mode]['fidelity'])}")
    if "bf16" in vellum:
        bf16 = vellum["bf16"]["ocr"]
        result["vellum_bf16"] = vellum["bf16"]
        result["ratios"]["vellum_bf16_batched_vs_transformers_batched"] = hf_seconds / bf16["batched_seconds"]
        result["ratios"]["vellum_bf16_batched_vs_vellum_f32_batched"] = ocr["batched_seconds"] / bf16["batched_seconds"]
    if args.llama_cpp:
        llama, failed = llama_cpp_bench(args.llama_cpp, model_dir, images, args.new_tokens, inputs["input_ids"].shape[1], work)
        result["llama_cpp"] = llama
        if failed:
            result["llama_cpp_failed"] = failed
        if "f16" in llama:
            result["prompt_tokens"]["llama_cpp"] = sum(llama["f16"]["prompt_tokens"]) / len(images)
            result["ratios"]["vellum_f32_vs_llama_cpp_f16"] = llama["f16"]["batched_seconds"] / ocr["batched_seconds"]
            result["ratios"]["vellum_one_request_vs_llama_cpp_f16_one_request"] = llama["f16"]["one_request_seconds"] / (ocr["sequential_seconds"] / ocr["requests"])
        if "int8" in vellum and "q8_0" in llama:
            int8 = vellum["int8"]["ocr"]
            result["ratios"]["vellum_int8_batched_vs_llama_cpp_q8_0"] = llama["q8_0"]["batched_seconds"] / int8["batched_seconds"]
            result["ratios"]["vellum_int8_one_request_vs_llama_cpp_q8_0_one_request"] = llama["q8_0"]["one_request_seconds"] / (int8["sequential_seconds"] / int8["requests"])
    print(json.dumps(result["ratios"], indent=1))
    if args.out:
        json.dump(result, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
