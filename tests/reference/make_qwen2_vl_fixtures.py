"""Fixtures for vellum's Qwen2-VL parity tests (olmOCR-7B-0225-preview's architecture), produced by
HF transformers on the CPU.

    python -m venv /tmp/venv-q2
    /tmp/venv-q2/bin/pip install torch==2.4.1 torchvision==0.19.1 "transformers==4.57.6" tiktoken safetensors pillow
    /tmp/venv-q2/bin/python tests/reference/make_qwen2_vl_fixtures.py     # writes tests/fixtures/qwen2_vl

transformers 4.57 is the newest release that runs on the torch this machine's PyPI mirror serves
(5.x wants torch >= 2.6); Qwen2-VL's modelling code is the same in 5.x, and the parity test also
loads the checkpoint rewritten into the 5.x config layout. Without `mm_token_type_ids` (a 5.24
argument) 4.x computes M-RoPE from the image grid, so the positions here are the 3D ones.

Writes models/<name>/ as make_qwen2_5_vl_fixtures.py does for Qwen2.5-VL: a tiny
Qwen2VLForConditionalGeneration saved by save_pretrained (the same small Qwen vocabulary, taken
from the Qwen2.5-VL fixtures), and per case the prompt ids, M-RoPE positions, the vision tower's
output, the last-position logits and 32 greedy tokens from `generate` with their raw logprobs.
The images need no resizing (sides on the 28-pixel grid, within the pixel bounds): 4.57's image
processor resizes through PIL on uint8, 5.x's through torch, and vellum follows 5.x — resizing is
checked against 5.24 by the Qwen2.5-VL fixtures, whose processor is the same class.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    GenerationConfig,
    Qwen2TokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)
from transformers.image_transforms import resize
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

sys.path.insert(0, os.path.dirname(__file__))
from make_qwen2_5_vl_fixtures import ROOT, ROLMOCR_PROMPT, STEPS, TEMPLATE, randomize, synthetic_page  # noqa: E402

TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl", "models", "gqa_window4", "model", "tokenizer.json")

MODELS = {
    # GQA 4:2, three layers; a tower of 3 LayerNorm / QuickGELU blocks, mlp_ratio 2.
    "gqa": dict(
        text=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
        mrope_section=[2, 3, 3],
        vision=dict(depth=3, embed_dim=32, mlp_ratio=2, num_heads=2),
        seed=31,
        cases=[("page_140x196", 196, 140, ROLMOCR_PROMPT), ("page_252x196", 252, 196, "Read this page."), ("tall_56x308", 56, 308, ROLMOCR_PROMPT)],
    ),
    # MQA 6:1 (head_dim 8); two tower blocks with the default mlp_ratio 4.
    "mqa": dict(
        text=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=1),
        mrope_section=[1, 1, 2],
        vision=dict(depth=2, embed_dim=48, num_heads=3),
        seed=37,
        cases=[("wide_140x84", 140, 84, ROLMOCR_PROMPT), ("small_56x56", 56, 56, "OCR.")],
    ),
}


def write_model_fixtures(out):
    tokenizer = Qwen2TokenizerFast(tokenizer_file=TOKENIZER, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    vocab_size = 1024
    for name, spec in MODELS.items():
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        model_dir = os.path.join(d, "model")
        os.makedirs(model_dir)
        shutil.copy(TOKENIZER, os.path.join(model_dir, "tokenizer.json"))
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|im_end|>", "<|endoftext|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]}
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 4096}, open(os.path.join(model_dir, "tokenizer_config.json"), "w"))
        pp = {"min_pixels": 4 * 28 * 28, "max_pixels": 64 * 28 * 28, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
              "image_processor_type": "Qwen2VLImageProcessor"}
        json.dump(pp, open(os.path.join(model_dir, "preprocessor_config.json"), "w"))

        torch.manual_seed(spec["seed"])
        text = spec["text"]
        cfg = Qwen2VLConfig(
            vocab_size=vocab_size, rms_norm_eps=1e-6, max_position_embeddings=4096, rope_theta=1000000.0,
            rope_scaling={"type": "mrope", "mrope_section": spec["mrope_section"]},
            eos_token_id=ids["<|im_end|>"], bos_token_id=ids["<|endoftext|>"], **text,
            vision_config=dict(in_chans=3, patch_size=14, temporal_patch_size=2, spatial_merge_size=2, hidden_size=text["hidden_size"], **spec["vision"]),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
        )
        cfg._attn_implementation = "eager"
        model = Qwen2VLForConditionalGeneration(cfg).eval()
        randomize(model, spec["seed"], logit_scale=4.0)
        model.save_pretrained(model_dir)

        image_processor = Qwen2VLImageProcessor(min_pixels=pp["min_pixels"], max_pixels=pp["max_pixels"])
        processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)
        cases_meta = []
        for ci, (case, w, h, prompt) in enumerate(spec["cases"]):
            img = synthetic_page(w, h, seed=spec["seed"] * 100 + ci)
            img.save(os.path.join(d, f"{case}.png"))
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            prompt_text = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(text=[prompt_text], images=[img], return_tensors="pt")
            with torch.no_grad():
                vis = model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
                pos, delta = model.model.get_rope_index(inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
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
            th, tw = [int(v) * 14 for v in inputs["image_grid_thw"][0, 1:]]
            assert (th, tw) == (h, w), (case, th, tw)
            # The uint8 image the processor normalised (its own resize, as its slow path does it).
            rgb = np.array(img.convert("RGB"))
            if (th, tw) != (h, w):
                rgb = resize(rgb, size=(th, tw), resample=image_processor.resample, input_data_format="channels_last")
            Image.fromarray(np.asarray(rgb, np.uint8), "RGB").save(os.path.join(d, f"{case}.resized.png"))
            again = processor.image_processor(images=[Image.open(os.path.join(d, f"{case}.resized.png"))], return_tensors="pt")
            assert torch.equal(again["pixel_values"], inputs["pixel_values"]), case
            save_file({"vision_output": vis.contiguous(), "last_logits": logits.contiguous()}, os.path.join(d, f"{case}.expected.safetensors"))
            meta = {
                "case": case, "image": f"{case}.png", "prompt": prompt, "text": prompt_text,
                "input_ids": inputs["input_ids"][0].tolist(), "grid_thw": inputs["image_grid_thw"][0].tolist(),
                "positions": pos[:, 0].tolist(), "rope_delta": int(delta[0, 0]),
                "greedy_tokens": tokens, "greedy_logprobs": logprobs, "greedy_margins": margins,
                "decoded_text": tokenizer.decode(tokens, skip_special_tokens=True), "resized_image": f"{case}.resized.png",
                "transformers": __import__("transformers").__version__,
            }
            json.dump(meta, open(os.path.join(d, f"{case}.expected.json"), "w"))
            cases_meta.append(case)
            print(f"{name}/{case}: {n_prompt} prompt tokens, grid {meta['grid_thw']}, min greedy margin {min(margins):.4f}")
        json.dump({"cases": cases_meta}, open(os.path.join(d, "cases.json"), "w"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "qwen2_vl"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    write_model_fixtures(os.path.join(args.out, "models"))


if __name__ == "__main__":
    main()
