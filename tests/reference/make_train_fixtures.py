"""Training-parity fixtures for vellum's nano DeepSeek-OCR trainer, from the fork's own code.

The reference is the nanochat fork (Yusuke710/nanochat, branch tier2-vision-tasks, commit
fb2ed7b): Stage 1 is scripts/vis_tok_train.py, Stage 2 scripts/vis_mid_train.py. Its modules
(VisionDataset, collate_fn, NanoDeepseekOCR, RustBPETokenizer) are imported from the checkout
given by --nanochat, never copied here. Re-run with:

    git clone -b tier2-vision-tasks https://github.com/Yusuke710/nanochat /tmp/nanochat
    git -C /tmp/nanochat checkout fb2ed7b
    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip install torch==2.4.1 torchvision==0.19.1   # the fork's locked versions
    # (the committed fixtures were last written with torch 2.15, transformers 5.25)
    /tmp/venv/bin/pip install tiktoken tokenizers transformers easydict safetensors pillow numpy dashscope
    /tmp/venv/bin/python tests/reference/make_train_fixtures.py --nanochat /tmp/nanochat

(dashscope only ships qwen.tiktoken, from which make_deepseek_ocr_fixtures.tiny_tiktoken takes
the tiny vocabulary.) Everything is deterministic: images from fixed seeds, no shuffling, no
dropout in the model, one CPU thread, f32.

Writes tests/fixtures/train/:

data/          train.json (5 samples), val.json (2), images/*.png: the fork's sample format
               {"id", "type", "prompt", "answer", "image"}.
<case>/case.json, <case>/expected.safetensors for the cases in CASES.

The initial model is tests/fixtures/deepseek_ocr/gqa/model.safetensors as it is, loaded with
strict=True into the fork's NanoDeepseekOCR built from that directory's config.json with SAM and
CLIP at the same reduced sizes as make_deepseek_ocr_fixtures.py (build_sam_vit_b / build_clip_l
patched the same way). The tokenizer is RustBPETokenizer(tiny_tiktoken(nanochat.tokenizer),
"<|bos|>"): tiny_tiktoken is imported from make_deepseek_ocr_fixtures.py; it is the same
encoding as tests/fixtures/deepseek_ocr/tokenizer.pkl and needs no patching (RustBPETokenizer
only needs .enc with encode_ordinary / encode / encode_single_token).

Batches: each item is VisionDataset.__getitem__(i) (prompt "<image>" -> "<|image|>" expanded to
count_vision_tokens(base_size) image tokens, answer = tokenizer.encode(answer): no BOS), with ONE
deliberate deviation from the fork: vellum appends <|assistant_end|> to every item's ids (after
the answer) so that trained models stop. Items are batched by a torch DataLoader with B=2,
shuffle=False (the fork shuffles the train split), drop_last=True, num_workers=0 and the fork's
own collate_fn(batch, T=seq_len); when exhausted it is re-iterated, as the scripts do. With 5
samples that is [0,1],[2,3],[0,1],... : sample 4 is never seen (drop_last).

Training, as the scripts do it: model.train(); torch.optim.AdamW(params, lr, weight_decay) with
default betas/eps; per step: lr from the script's get_lr (Stage 1: linear warmup
lr*(step+1)/warmup then cosine to 0 over steps-warmup; Stage 2: the same warmup then
lr*gamma**((step-warmup)//lr_decay_step)) written into every param group, zero_grad(),
loss = model(input_ids, targets, pixel_values), backward(), clip_grad_norm_(params, grad_clip)
(its return value, the total norm before clipping, is logged as grad_norm), optimizer.step().
Stage 1: params = model.parameters(). Stage 2: every sam_model.* parameter (net_2/net_3
included) gets requires_grad=False and params = the others; no text-only steps (text_ratio 0).
freeze="vision" (vellum's --freeze vision) also sets requires_grad=False on vision_model.* (CLIP)
and projector.*.
CPU, f32, no autocast; the scripts' evaluation passes (eval mode, no_grad) do not change the
weights and are left out. Besides, "autocast_bf16_step0": step 0's loss and total gradient norm
under torch.autocast("cpu", dtype=torch.bfloat16) on a copy of the initial model (the fork's GPU
recipe, torch.amp.autocast(dtype=bfloat16), with f32 master weights).

case.json: the hyper-parameters; "batches" (sample indices per step); "inputs"/"targets" per
step, per row, the row's unpadded length n = min(len(ids) - 1, max_len) (the rest of the row is
input 0 / target -1); "log" per step {step, loss, lr, grad_norm, tokens} (tokens = targets != -1
in the batch: the loss is their mean); "loss_f64_step0": step 0's loss recomputed with the
initial model in float64 (how far f32 noise goes; the fork's forward casts logits to float32, so
softcap and loss are redone in float64 on lm_head's float64 output); "trainable", the trainable
parameters, and "no_grad", the trainable ones that get no gradient (AdamW skips them: no
update, not even weight decay); "val_loss_before"/"val_loss_after": the loss on the first val batch (B=2, same collate)
in eval mode before step 0 and after the last step.

expected.safetensors (float32), parameter names as in the fork's state dict (= vellum's
model.safetensors names):
  grad.<name>   step 0's gradient (before clipping) of each trainable parameter with a gradient,
  update.<name> weights after the last step minus the initial weights, for every parameter
                (frozen ones are exactly 0),
for tensors of fewer than 16,384 elements (FULL_LIMIT, also in case.json as "full_limit"), in
their own shape. A larger tensor is stored as
  norm.grad.<name> / norm.update.<name>     its L2 norm, shape (1,),
  sample.grad.<name> / sample.update.<name> flat[0::s][:512] of the flattened (row-major) tensor
                                           with s = numel // 512, shape (512,).
"""

import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
import make_deepseek_ocr_fixtures as inference_fixtures  # noqa: E402

MODEL_DIR = os.path.join(ROOT, "tests", "fixtures", "deepseek_ocr", "gqa")
FULL_LIMIT = 16_384  # the brief said 20k; lowered to keep the fixtures under ~3 MB
SAMPLES = 512

OCR = "<image>\nOCR this document."
TABLE = "<image>\nConvert this table to HTML."
# (id, type, prompt, answer, image size). Row lengths (len(ids) - 1 = prompt + answer tokens, with
# <|assistant_end|>) past the image tokens: 10+22, 14+28, 10+36, 10+14: only sample 2 (LONG) is cut
# by seq_len = image tokens + 43; in each batch the other row is padded.
TRAIN = [
    ("receipt", "document", OCR, "Total due: 18 dollars and 40 cents.", (100, 70)),
    ("roster", "table", TABLE, "<table><tr><td>Ann</td></tr></table>", (90, 60)),
    ("story", "document", OCR, "Jazzy wizards quickly vexed the grumpy knights by a lake.", (70, 100)),
    ("memo", "document", OCR, "Meeting moved to Friday.", (100, 100)),
    ("note", "document", OCR, "Never seen: drop_last.", (80, 70)),
]
LONG = 2
VAL = [
    ("letter", "document", OCR, "Dear Ann, thanks for the books.", (100, 70)),
    ("notice", "document", OCR, "Closed on Monday.", (70, 90)),
]

COMMON = dict(steps=6, batch_size=2, lr=1e-3, warmup_steps=2)
CASES = {
    # 273 image tokens: rows of 305, 315, 319 -> 316, 297 inputs.
    "stage1_b1024": dict(COMMON, stage=1, base_size=1024, schedule="cosine", weight_decay=0.1, grad_clip=12.0, seq_len=316),
    # 73 image tokens (SAM's pos_embed and global rel-pos tables resized): 105, 115, 119 -> 116, 97.
    "stage1_b512": dict(COMMON, stage=1, base_size=512, schedule="cosine", weight_decay=0.1, grad_clip=12.0, seq_len=116),
    "stage2_b512": dict(COMMON, stage=2, base_size=512, schedule="step", lr_decay_step=2, lr_decay_gamma=0.5,
                        weight_decay=0.0, grad_clip=12.0, seq_len=116),
    # `--freeze vision`: SAM, CLIP and the projector all fixed; only the language model (and the
    # image newline / separator embeddings) train.
    "frozen_vision_b512": dict(COMMON, stage=2, freeze="vision", base_size=512, schedule="step", lr_decay_step=2,
                               lr_decay_gamma=0.5, weight_decay=0.0, grad_clip=10.5, seq_len=116),
}


def get_lr(c, step):
    """The scripts' get_lr: vis_tok_train.py (cosine) or vis_mid_train.py (step)."""
    lr, warmup, steps = c["lr"], c["warmup_steps"], c["steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    if c["schedule"] == "cosine":
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr * (c["lr_decay_gamma"] ** ((step - warmup) // c["lr_decay_step"]))


def write_data(out):
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for split, rows, seed0 in (("train", TRAIN, 100), ("val", VAL, 200)):
        samples = []
        for i, (sid, kind, prompt, answer, (w, h)) in enumerate(rows):
            image = f"images/{sid}.png"
            inference_fixtures.page(w, h, seed0 + i).save(os.path.join(out, image))
            samples.append({"id": sid, "type": kind, "prompt": prompt, "answer": answer, "image": image})
        with open(os.path.join(out, f"{split}.json"), "w") as f:
            json.dump(samples, f, indent=1)


def store(tensors, kind, name, t):
    # A copy: clip_grad_norm_ scales .grad in place afterwards (a view would be stored clipped).
    t = t.detach().float().clone().contiguous()
    if t.numel() < FULL_LIMIT:
        tensors[f"{kind}.{name}"] = t
    else:
        flat = t.flatten()
        s = flat.numel() // SAMPLES
        tensors[f"norm.{kind}.{name}"] = flat.norm().reshape(1)
        tensors[f"sample.{kind}.{name}"] = flat[0::s][:SAMPLES].contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", required=True, help="path of a tier2-vision-tasks checkout at fb2ed7b")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "train"))
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.nanochat))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from torch.utils.data import DataLoader, Dataset
    from nanochat import nano_deepseek_ocr as ndo
    from nanochat import tokenizer as nano_tok
    from nanochat.gpt import GPTConfig
    from nanochat.vision_dataloader import VisionDataset, collate_fn

    config = json.load(open(os.path.join(MODEL_DIR, "config.json")))
    sam_cfg, clip_cfg, gpt_cfg = config["sam"], config["clip"], config["gpt"]
    # The gqa model of make_deepseek_ocr_fixtures.py, built the same way.
    assert {k: gpt_cfg[k] for k in ("n_layer", "n_head", "n_kv_head", "n_embd")} == inference_fixtures.MODELS["gqa"]["gpt"]
    assert sam_cfg["net_2_chans"] == inference_fixtures.SAM["net_2"] and sam_cfg["net_3_chans"] == inference_fixtures.SAM["net_3"]

    S, C = inference_fixtures.SAM, inference_fixtures.CLIP
    assert (sam_cfg["img_size"], sam_cfg["patch_size"], sam_cfg["window_size"]) == (1024, 16, 14)
    assert [sam_cfg[k] for k in ("embed_dim", "depth", "num_heads", "global_attn_indexes", "out_chans")] == [
        S[k] for k in ("embed_dim", "depth", "num_heads", "global_attn_indexes", "out_chans")]
    assert (clip_cfg["hidden_size"], clip_cfg["num_layers"], clip_cfg["num_heads"], clip_cfg["ffn_hidden_size"]) == (
        C["hidden_size"], C["num_layers"], C["num_attention_heads"], C["ffn_hidden_size"])
    inference_fixtures.use_small_encoders()

    enc = inference_fixtures.tiny_tiktoken(nano_tok)
    tokenizer = nano_tok.RustBPETokenizer(enc, "<|bos|>")
    image_id = tokenizer.encode_special("<|image|>")
    end_id = tokenizer.encode_special("<|assistant_end|>")
    assert image_id == config["image_token_id"] and [end_id] == config["eos_token_ids"] and enc.n_vocab == gpt_cfg["vocab_size"]

    initial = load_file(os.path.join(MODEL_DIR, "model.safetensors"))

    def build(base_size):
        cfg = GPTConfig(sequence_len=1024, vocab_size=gpt_cfg["vocab_size"], n_layer=gpt_cfg["n_layer"],
                        n_head=gpt_cfg["n_head"], n_kv_head=gpt_cfg["n_kv_head"], n_embd=gpt_cfg["n_embd"])
        torch.manual_seed(inference_fixtures.MODELS["gqa"]["seed"])
        vision = ndo.VisionConfig(base_size=base_size, sam_embed_dim=sam_cfg["net_3_chans"], clip_embed_dim=clip_cfg["hidden_size"])
        model = ndo.NanoDeepseekOCR(cfg, vision, image_token_id=image_id)
        model.load_state_dict(initial, strict=True)  # exact: every key, every shape
        return model

    out = args.out
    data_dir = os.path.join(out, "data")
    write_data(data_dir)

    # vellum uses the model dir's tokenizer.json: it must agree with the tiktoken ids here.
    from tokenizers import Tokenizer
    hf_tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    for _, _, prompt, answer, _ in TRAIN + VAL:
        assert hf_tok.encode(answer, add_special_tokens=False).ids == tokenizer.encode(answer), answer
        text = prompt.replace("<image>", "<|image|>")
        assert hf_tok.encode(text, add_special_tokens=False).ids == enc.encode(text, allowed_special={"<|image|>"}), text

    class WithEnd(Dataset):
        """The fork's VisionDataset item, with <|assistant_end|> appended (vellum's deviation)."""

        def __init__(self, split, base_size):
            self.inner = VisionDataset(data_dir, tokenizer, split, base_size)

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, idx):
            ids, prompt_len, pixel_values, image_token_id = self.inner[idx]
            return ids + [end_id], prompt_len, pixel_values, image_token_id

    def loader(split, c):
        ds = WithEnd(split, c["base_size"])
        return ds, DataLoader(ds, batch_size=c["batch_size"], shuffle=False, num_workers=0, drop_last=True,
                              collate_fn=lambda batch: collate_fn(batch, c["seq_len"]))

    def loss_on(model, batch):
        inputs, targets, pixel_values = batch
        return model(input_ids=inputs, targets=targets, pixel_values=pixel_values)

    for name, c in CASES.items():
        print(f"== {name}")
        model = build(c["base_size"])
        frozen = [model.sam_model] * (c["stage"] == 2) + [model.vision_model, model.projector] * (c.get("freeze") == "vision")
        for part in frozen:
            for p in part.parameters():
                p.requires_grad = False
        params = list(model.parameters()) if c["stage"] == 1 else [p for p in model.parameters() if p.requires_grad]
        names = {id(p): n for n, p in model.named_parameters()}
        trainable = [names[id(p)] for p in params]
        init = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.AdamW(params, lr=c["lr"], weight_decay=c["weight_decay"])

        ds, train_loader = loader("train", c)
        _, val_loader = loader("val", c)
        val_batch = next(iter(val_loader))
        model.eval()
        with torch.no_grad():
            val_before = loss_on(model, val_batch).item()

        # The batch order the DataLoader follows: its batch sampler, epoch after epoch.
        epoch = [list(b) for b in train_loader.batch_sampler]
        model.train()
        train_iter = iter(train_loader)
        log, batches, inputs_log, targets_log = [], [], [], []
        tensors, no_grad, loss_f64 = {}, [], None
        for step in range(c["steps"]):
            try:
                batch = next(train_iter)
            except StopIteration:
                train_iter = iter(train_loader)
                batch = next(train_iter)
            idx = epoch[step % len(epoch)]
            inputs, targets, pixel_values = batch
            # Check the recorded indices against the batch itself, and the padding.
            items = [ds[i] for i in idx]
            max_len = inputs.shape[1]
            rows_in, rows_tg = [], []
            for r, (ids, prompt_len, pv, _) in enumerate(items):
                n = min(len(ids) - 1, max_len)
                assert inputs[r, :n].tolist() == ids[:n] and torch.equal(pixel_values[r], pv)
                assert (inputs[r, n:] == 0).all() and (targets[r, n:] == -1).all()
                assert prompt_len < n, "seq_len must keep every prompt whole (the image scatter needs every image token)"
                assert (len(ids) - 1 > c["seq_len"]) == (idx[r] == LONG), "only the long sample is cut"
                rows_in.append(inputs[r, :n].tolist())
                rows_tg.append(targets[r, :n].tolist())
            batches.append(idx)
            inputs_log.append(rows_in)
            targets_log.append(rows_tg)

            if step == 0:
                # The fork's forward casts the logits to float32 (logits.float()) before the softcap
                # and the loss; take lm_head's float64 output instead and finish in float64 the
                # way _forward_gpt_with_embeds does (softcap 15, mean cross-entropy, ignore -1).
                m64 = copy.deepcopy(model).double()
                seen = []
                m64.gpt.lm_head.register_forward_hook(lambda mod, args, out: seen.append(out))
                with torch.no_grad():
                    m64(input_ids=inputs, targets=targets, pixel_values=pixel_values.double())
                logits64 = 15 * torch.tanh(seen[0] / 15)
                assert logits64.dtype == torch.float64
                loss_f64 = torch.nn.functional.cross_entropy(
                    logits64.view(-1, logits64.size(-1)), targets.view(-1), ignore_index=-1).item()
                del m64, seen, logits64

            if step == 0:
                # The fork's GPU recipe, torch.amp.autocast(dtype=bfloat16) over f32 master weights,
                # on the CPU: step 0's loss and gradient norm (vellum's `--dtype bf16`).
                m_bf = copy.deepcopy(model)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss_bf = loss_on(m_bf, batch)
                loss_bf.backward()
                bf_params = [p for p in m_bf.parameters() if p.requires_grad and p.grad is not None]
                autocast = {"loss": loss_bf.item(),
                            "grad_norm": float(torch.norm(torch.stack([p.grad.norm() for p in bf_params])))}
                del m_bf, loss_bf, bf_params

            current_lr = get_lr(c, step)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            optimizer.zero_grad()
            loss = loss_on(model, batch)
            loss.backward()
            if step == 0:
                for n_, p in zip(trainable, params):
                    if p.grad is None:
                        no_grad.append(n_)
                    else:
                        store(tensors, "grad", n_, p.grad)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
            optimizer.step()
            tokens = int((targets != -1).sum())
            log.append({"step": step, "loss": loss.item(), "lr": current_lr, "grad_norm": float(grad_norm), "tokens": tokens})
            print(f"step {step}: loss {loss.item():.6f} lr {current_lr:.3e} grad_norm {float(grad_norm):.4f} tokens {tokens} batch {idx}")

        model.eval()
        with torch.no_grad():
            val_after = loss_on(model, val_batch).item()
        trainable_set = set(trainable)
        for n_, p in model.named_parameters():
            update = p.detach() - init[n_]
            if n_ not in trainable_set or n_ in no_grad:
                assert torch.count_nonzero(update) == 0, n_
            store(tensors, "update", n_, update)

        # Clipping is active on most steps, not all (both branches), and no norm is near the limit.
        clipped = sum(e["grad_norm"] > c["grad_clip"] for e in log)
        assert c["steps"] / 2 < clipped < c["steps"], f"clipping active on {clipped} of {c['steps']} steps"
        assert all(abs(e["grad_norm"] / c["grad_clip"] - 1) > 0.01 for e in log)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        save_file(tensors, os.path.join(d, "expected.safetensors"))
        case = {k: c.get(k) for k in ("stage", "freeze", "base_size", "steps", "batch_size", "lr", "warmup_steps", "schedule",
                                      "lr_decay_step", "lr_decay_gamma", "weight_decay", "grad_clip", "seq_len")}
        case.update({
            "model": os.path.relpath(MODEL_DIR, out), "data": "data", "image_token_id": image_id, "end_token_id": end_id,
            "num_vision_tokens": ds.inner.n_img_tokens, "batches": batches, "inputs": inputs_log, "targets": targets_log,
            "log": log, "loss_f64_step0": loss_f64, "autocast_bf16_step0": autocast,
            "val_loss_before": val_before, "val_loss_after": val_after,
            "trainable": trainable, "no_grad": no_grad, "full_limit": FULL_LIMIT, "samples": SAMPLES,
        })
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f)
        print(f"{name}: f32 loss {log[0]['loss']:.8f} vs f64 {loss_f64:.8f} vs bf16 autocast {autocast['loss']:.6f};"
              f" clipped {clipped}/{c['steps']};"
              f" no grad: {no_grad}; val {val_before:.4f} -> {val_after:.4f}")


if __name__ == "__main__":
    main()
