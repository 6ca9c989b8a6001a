"""End-to-end check of `ocr generate` against transformers' `generate` with the real Qwen2
vocabulary (too big for committed fixtures, so this runs on demand, not in CI).

For several random Qwen2.5-VL configs (layers, GQA ratios, window sizes, full-attention blocks,
activations, tied embeddings) and images of several sizes, it writes a model directory as
transformers does (save_pretrained + tokenizer.json/tokenizer_config.json +
preprocessor_config.json, no chat template), runs both, and compares greedy tokens and logprobs.

    cargo build --bin ocr
    python tests/reference/check_generate_real_vocab.py --ocr target/debug/ocr
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
import qwen_tokenizer  # noqa: E402
from make_qwen2_5_vl_fixtures import qwen_processor, randomize, synthetic_page  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
)

CONFIGS = [
    dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, mrope=[2, 3, 3]),
         vision=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, window_size=112, fullatt_block_indexes=[1])),
    dict(text=dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=1, mrope=[2, 3, 3]),
         vision=dict(depth=4, hidden_size=48, intermediate_size=64, num_heads=3, window_size=56, fullatt_block_indexes=[0, 3], hidden_act="gelu_pytorch_tanh"),
         tie=True),
    dict(text=dict(hidden_size=128, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, mrope=[8, 12, 12]),
         vision=dict(depth=2, hidden_size=64, intermediate_size=96, num_heads=4, window_size=224, fullatt_block_indexes=[])),
]
IMAGES = [(640, 480), (97, 1210), (1500, 60), (28, 28), (1000, 1400)]
PROMPTS = ["Return the plain text representation of this document as if you were reading it naturally.\n", "Describe."]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ocr", default="target/debug/ocr")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = tempfile.mkdtemp(prefix="vellum-real-vocab-")
    tok_path = os.path.join(work, "tokenizer.json")
    qwen_tokenizer.build(qwen_tokenizer.default_tiktoken_path()).save(tok_path, pretty=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tok_path, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in qwen_tokenizer.SPECIAL_TOKENS}
    failures = 0
    for ci, spec in enumerate(CONFIGS):
        model_dir = os.path.join(work, f"model{ci}")
        text = dict(spec["text"])
        mrope = text.pop("mrope")
        cfg = Qwen2_5_VLConfig(
            text_config=dict(vocab_size=152064, rms_norm_eps=1e-6, max_position_embeddings=32768, eos_token_id=ids["<|im_end|>"],
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope}, **text),
            vision_config=dict(out_hidden_size=text["hidden_size"], **spec["vision"]),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=spec.get("tie", False),
        )
        torch.manual_seed(ci)
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        randomize(model, ci, logit_scale=4.0)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        for f in ("chat_template.jinja", "chat_template.json"):
            if os.path.exists(os.path.join(model_dir, f)):
                os.unlink(os.path.join(model_dir, f))
        tc = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
        tc.pop("chat_template", None)
        json.dump(tc, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
        image_processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
        image_processor.save_pretrained(model_dir)
        processor = qwen_processor(tok_path, image_processor)
        for ii, (w, h) in enumerate(IMAGES):
            prompt = PROMPTS[ii % len(PROMPTS)]
            img = synthetic_page(w, h, seed=1000 + ii)
            img_path = os.path.join(work, f"img{ii}.png")
            img.save(img_path)
            chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}], add_generation_prompt=True)
            inputs = processor(text=[chat], images=[img], return_tensors="pt")
            with torch.no_grad():
                gen = model.generate(**inputs, generation_config=GenerationConfig(max_new_tokens=args.steps, do_sample=False, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
                                     output_logits=True, return_dict_in_generate=True)
            n = inputs["input_ids"].shape[1]
            want = gen.sequences[0, n:].tolist()
            logits = torch.stack(gen.logits)[:, 0].float()
            want_lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(want)[:, None])[:, 0].tolist()
            top2 = logits.topk(2, -1).values
            margin = (top2[:, 0] - top2[:, 1]).min().item()
            out = subprocess.run([args.ocr, "generate", "--model", model_dir, "--image", img_path, "--prompt", prompt, "--max-new-tokens", str(args.steps), "--json"], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"config {ci} image {w}x{h}: ocr failed: {out.stderr}")
                failures += 1
                continue
            got = json.loads(out.stdout)
            same = got["tokens"] == want and got["prompt_tokens"] == n
            lp = max(abs(a - b) for a, b in zip(got["logprobs"], want_lp)) if same else float("nan")
            ok = same and lp <= 1e-3
            failures += not ok
            print(f"config {ci} image {w:>4}x{h:<4} grid {inputs['image_grid_thw'][0].tolist()} prompt {n:>5} tokens: "
                  f"{'identical' if same else 'DIFFERENT'} {len(want)} tokens, max logprob diff {lp:.1e}, min margin {margin:.3f}, {got['finish_reason']}")
    print(f"{failures} failure(s); work dir {work}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
