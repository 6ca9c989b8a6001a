"""The fork's pretrained initialisation on tiny stand-ins, for tests/pretrained_init.rs:
tests/fixtures/pretrained_init/.

Yusuke710/nanochat (branch tier2-vision-tasks) starts Stage 1 (scripts/vis_tok_train.py) from
facebook/sam-vit-base (transformers `SamModel`), openai/clip-vit-large-patch14 (`CLIPModel`)
and nanochat-students/base-d20 (`pytorch_model.bin`), loaded by its own functions in
nanochat/deepencoder/load_pretrained.py, then grows `wte` and `lm_head` to the tokenizer's size.
This script makes tiny random stand-ins of the three under those hub ids in an HF cache
(hub/, offline layout), runs the fork's unchanged load functions on them (HF_HUB_OFFLINE, the
cache pointed at hub/) and vis_tok_train.py's vocabulary expansion, and writes what the fork's
model holds afterwards:

- expected.safetensors: every loaded tensor (for wte and lm_head the loaded rows only);
- expected.json: every tensor's name and shape, and for the fresh ones (and rows) the fork's
  init: distribution, scale, and the statistics of the fork's own draw.

    git --git-dir <mirror of Yusuke710/nanochat> archive tier2-vision-tasks | tar -x -C /tmp/nanochat
    /work/venv/bin/python tests/reference/make_pretrained_init_fixtures.py /tmp/nanochat

Sizes: the fork's loaders walk 12 SAM blocks and 24 CLIP layers (load_pretrained.py), so the
stand-ins have those depths at widths of 8. The fork builds SAM and CLIP at full size
(build_sam_vit_b, build_clip_l): here those two builders are replaced by the same classes at the
stand-ins' sizes, net_2/net_3 (fixed at 256→512→1024 channels in sam_vary_sdpa.py) becoming
8→16→8 convolutions of the same kind; everything else is the fork's code as it is.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/pretrained_init"
SAM_ID, CLIP_ID, GPT_ID = "facebook/sam-vit-base", "openai/clip-vit-large-patch14", "nanochat-students/base-d20"
COMMIT = "0" * 39 + "1"

# Sizes of the stand-ins (see the module doc).
SAM_SIZES = dict(hidden_size=8, output_channels=8, num_hidden_layers=12, num_attention_heads=2, mlp_dim=32,
           image_size=128, patch_size=16, window_size=4, global_attn_indexes=[2, 5, 8, 11], num_pos_feats=4)
CLIP_SIZES = dict(hidden_size=8, num_hidden_layers=24, num_attention_heads=2, intermediate_size=16, image_size=28,
            patch_size=14, hidden_act="quick_gelu", projection_dim=8)
GPT_SIZES = dict(sequence_len=64, vocab_size=512, n_layer=2, n_head=4, n_kv_head=4, n_embd=16)
BASE_SIZE = 128


def randomize(module, torch, scale=0.5):
    """Every float parameter random, so that no loaded value is a coincidental 0 or 1."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


def cache_snapshot(repo_id):
    """The snapshot folder of `repo_id` in hub/, with refs/main pointing at it."""
    repo = OUT / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs/main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("nanochat", type=Path, help="a checkout of Yusuke710/nanochat, branch tier2-vision-tasks")
    args = parser.parse_args()
    if (OUT / "hub").exists():
        shutil.rmtree(OUT / "hub")
    OUT.mkdir(parents=True, exist_ok=True)
    # Before huggingface_hub is imported: it reads these once.
    os.environ["HF_HUB_CACHE"] = str(OUT / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(args.nanochat))
    # The fork's CLIP and projector configs are EasyDicts (attribute access to a dict); the
    # package is not installed here.
    easydict = types.ModuleType("easydict")

    class EasyDict(dict):
        __getattr__ = dict.__getitem__

    easydict.EasyDict = EasyDict
    sys.modules["easydict"] = easydict

    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import CLIPConfig, CLIPModel, SamConfig, SamModel

    import nanochat.nano_deepseek_ocr as ndo
    from nanochat.deepencoder import clip_sdpa, sam_vary_sdpa
    from nanochat.deepencoder.load_pretrained import (
        load_clip_weights_from_hf,
        load_nanochat_gpt_from_hf,
        load_sam_weights_from_hf,
    )
    from nanochat.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    # 1. The stand-ins, in the HF cache under the fork's hub ids.
    sam_cfg = SamConfig(
        vision_config=SAM_SIZES,
        prompt_encoder_config=dict(hidden_size=8, image_size=SAM_SIZES["image_size"], patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=8, iou_head_depth=1),
    )
    hf_sam = SamModel(sam_cfg)
    randomize(hf_sam, torch)
    clip_cfg = CLIPConfig(
        vision_config=CLIP_SIZES,
        text_config=dict(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=8, projection_dim=8),
        projection_dim=8,
    )
    hf_clip = CLIPModel(clip_cfg)
    randomize(hf_clip, torch)
    with tempfile.TemporaryDirectory() as tmp:
        for repo_id, model in [(SAM_ID, hf_sam), (CLIP_ID, hf_clip)]:
            model.save_pretrained(tmp)
            snap = cache_snapshot(repo_id)
            for name in ["config.json", "model.safetensors"]:
                shutil.copy(Path(tmp) / name, snap / name)
    stand_in = GPT(GPTConfig(**GPT_SIZES))
    randomize(stand_in, torch)
    state = stand_in.state_dict()
    # nanochat keeps wte in bf16 on CUDA (GPT.init_weights); the fork copies it into f32.
    state["transformer.wte.weight"] = state["transformer.wte.weight"].to(torch.bfloat16)
    snap = cache_snapshot(GPT_ID)
    torch.save(state, snap / "pytorch_model.bin")
    (snap / "config.json").write_text(json.dumps(GPT_SIZES, indent=1) + "\n")

    # 2. The fork's model at the stand-ins' sizes, loaded by its own functions.
    def tiny_sam():
        sam = sam_vary_sdpa.ImageEncoderViT(
            depth=SAM_SIZES["num_hidden_layers"], embed_dim=SAM_SIZES["hidden_size"], img_size=SAM_SIZES["image_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=SAM_SIZES["num_attention_heads"],
            patch_size=SAM_SIZES["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=SAM_SIZES["global_attn_indexes"], window_size=SAM_SIZES["window_size"],
            out_chans=SAM_SIZES["output_channels"],
        )
        c = SAM_SIZES["output_channels"]
        sam.net_2 = torch.nn.Conv2d(c, 2 * c, kernel_size=3, stride=2, padding=1, bias=False)
        sam.net_3 = torch.nn.Conv2d(2 * c, CLIP_SIZES["hidden_size"], kernel_size=3, stride=2, padding=1, bias=False)
        return sam

    def tiny_clip():
        cfg = EasyDict(clip_sdpa.vit_model_cfg)
        cfg.update(num_layers=CLIP_SIZES["num_hidden_layers"], hidden_size=CLIP_SIZES["hidden_size"],
                   num_heads=CLIP_SIZES["num_attention_heads"], num_attention_heads=CLIP_SIZES["num_attention_heads"],
                   ffn_hidden_size=CLIP_SIZES["intermediate_size"], image_size=CLIP_SIZES["image_size"],
                   patch_size=CLIP_SIZES["patch_size"])
        return clip_sdpa.VitModel(cfg=cfg)

    ndo.build_sam_vit_b = tiny_sam
    ndo.build_clip_l = tiny_clip
    tokenizer = Tokenizer.from_file(str(ROOT / "models/nano-deepseek-ocr/tiny/tokenizer.json"))
    shutil.copy(ROOT / "models/nano-deepseek-ocr/tiny/tokenizer.json", OUT / "tokenizer.json")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    image_token_id = tokenizer.token_to_id("<|image|>")
    # scripts/vis_tok_train.py lines 82-95, 108-122, at the stand-ins' sizes.
    pretrained_vocab_size = GPT_SIZES["vocab_size"]
    gpt_config = GPTConfig(**GPT_SIZES)
    model = ndo.build_nano_deepseek_ocr(
        gpt_config=gpt_config,
        vision_config=ndo.VisionConfig(base_size=BASE_SIZE, sam_embed_dim=CLIP_SIZES["hidden_size"],
                                       clip_embed_dim=CLIP_SIZES["hidden_size"]),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.sam_model = load_sam_weights_from_hf(model.sam_model, verbose=False)
    model.vision_model = load_clip_weights_from_hf(model.vision_model, verbose=False)
    model.gpt = load_nanochat_gpt_from_hf(model.gpt, verbose=False)
    if vocab_size > pretrained_vocab_size:
        old_wte = model.gpt.transformer.wte.weight.data
        old_lm_head = model.gpt.lm_head.weight.data
        model.gpt.transformer.wte = torch.nn.Embedding(vocab_size, gpt_config.n_embd)
        model.gpt.lm_head = torch.nn.Linear(gpt_config.n_embd, vocab_size, bias=False)
        model.gpt.transformer.wte.weight.data[:pretrained_vocab_size] = old_wte
        model.gpt.lm_head.weight.data[:pretrained_vocab_size] = old_lm_head
        model.gpt.transformer.wte.weight.data[pretrained_vocab_size:].normal_(mean=0.0, std=0.02)
        model.gpt.lm_head.weight.data[pretrained_vocab_size:].normal_(mean=0.0, std=0.02)
    model.set_image_token_id(image_token_id)

    # 3. What the fork's model holds: loaded tensors exactly, fresh ones by their init.
    after = model.state_dict()
    n_embd = gpt_config.n_embd
    fresh_init = {}
    for name, t in after.items():
        if name.startswith("sam_model.net_") or name.startswith("projector."):
            # PyTorch's default Conv2d/Linear init (the fork calls no init on them):
            # kaiming_uniform_(a=√5) = U(±1/√fan_in), and the bias U(±1/√fan_in).
            module = model.get_submodule(name.rsplit(".", 1)[0])
            fan_in = module.weight[0].numel()
            fresh_init[name] = dict(dist="uniform", bound=1.0 / math.sqrt(fan_in))
        elif name in ("image_newline", "view_separator"):
            # NanoDeepseekOCR.__init__: torch.randn(n_embd) / √n_embd.
            fresh_init[name] = dict(dist="normal", std=1.0 / math.sqrt(n_embd))
    unchanged = {k for k, v in before.items() if k in after and after[k].shape == v.shape and torch.equal(after[k], v)}
    unchanged.discard("vision_model.embeddings.position_ids")  # a buffer: arange, in both
    assert unchanged == set(fresh_init), (sorted(unchanged), sorted(fresh_init))
    tensors, meta = {}, {}
    for name, t in sorted(after.items()):
        entry = dict(shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."))
        if name in fresh_init:
            entry.update(fresh_init[name], measured_std=t.float().std().item(), max_abs=t.abs().max().item())
            assert fresh_init[name].get("bound", math.inf) >= entry["max_abs"]
        elif name in ("gpt.transformer.wte.weight", "gpt.lm_head.weight") and t.shape[0] > pretrained_vocab_size:
            rows = t[pretrained_vocab_size:]
            entry.update(loaded_rows=pretrained_vocab_size, rows_dist="normal", rows_std=0.02,
                         rows_measured_std=rows.std().item())
            tensors[name] = t[:pretrained_vocab_size].contiguous()
        else:
            tensors[name] = t.contiguous()
        meta[name] = entry
    save_file(tensors, OUT / "expected.safetensors")
    summary = dict(
        sam=SAM_ID, clip=CLIP_ID, gpt=GPT_ID, base_size=BASE_SIZE, n_head=GPT_SIZES["n_head"],
        clip_heads=CLIP_SIZES["num_attention_heads"], tokenizer_vocab=vocab_size,
        pretrained_vocab=pretrained_vocab_size, image_token_id=image_token_id, tensors=meta,
    )
    (OUT / "expected.json").write_text(json.dumps(summary, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(meta)} tensors ({len(fresh_init)} fresh, 2 grown by {vocab_size - pretrained_vocab_size} rows); "
          f"{total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
