"""The reference for a learning run: the fork's own PyTorch code (Yusuke710/nanochat @ fb2ed7b)
trained on the same pages, config and recipe as `ocr train --stage 2`, to tell a trainer bug from
a recipe that does not learn, and to time a step beside vellum's.

Builds the fork's NanoDeepseekOCR at a config.json's sizes the way make_train_fixtures.py does
(build_sam_vit_b / build_clip_l patched), trains Stage 2 (SAM frozen) on an `ocr synth` directory
of one-word answers with the fork's VisionDataset + collate_fn (+ <|assistant_end|> appended,
vellum's deviation), AdamW, linear warmup then constant, clip 1.0, f32; with --freeze vision,
CLIP and the projector are frozen too. Every --eval-every steps: the validation loss, the greedy
first answer token of each validation page, and how much the image reaches the answer: the page
spread of the projected image tokens (RMS deviation from their mean over pages / their RMS), their
norm, and the largest page-to-page spread of the first answer token's logits.

One letter, one font, one place (the image path frozen learns it; trained from step 0 it collapses):

    ocr synth --out /tmp/ao1 --words ao.txt --val-words ao.txt --lines 1-1 --words-per-line 1-1 \
        --page 192x192 --font-sizes 140 --fonts Helvetica --num-train 2000 --num-val 32 --seed 1
    python tests/reference/fork_train_run.py --nanochat /tmp/nanochat --data /tmp/ao1 --steps 200 --eval-every 25 [--freeze vision]

    ocr synth --out /tmp/ao --words ao.txt --val-words ao.txt --lines 1-1 --words-per-line 1-1 \
        --page 60x60 --font-sizes 40,46,52 --num-train 8000 --num-val 32 --seed 1   # ao.txt: a, o
    python tests/reference/fork_train_run.py --nanochat /tmp/nanochat --data /tmp/ao --steps 1000
    ocr train --init-config models/nano-deepseek-ocr/tiny/config.json --data /tmp/ao --out /tmp/run \
        --stage 2 --steps 1000 --batch-size 16 --seq-len 128 --lr 2e-3 --warmup-steps 10 --schedule constant

(the fork checkout and its Python packages as in make_train_fixtures.py's docstring).
"""

import argparse
import json
import math
import os
import sys
import time
import types

import torch

VELLUM = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(VELLUM, "tests", "reference"))
sys.path.insert(0, os.path.join(VELLUM, "scripts"))
# nanochat.tokenizer imports the fork's Rust extension at module level; RustBPETokenizer (wrapping a
# tiktoken Encoding) never uses it, so an empty module stands in.
sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))

import make_deepseek_ocr_fixtures as inference_fixtures  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--nanochat", required=True, help="a checkout of the fork at fb2ed7b")
ap.add_argument("--data", required=True, help="an ocr synth directory (train.json, val.json, images/)")
ap.add_argument("--config", default=os.path.join(VELLUM, "models/nano-deepseek-ocr/tiny/config.json"))
ap.add_argument("--steps", type=int, default=500)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--clip", type=float, default=1.0)
ap.add_argument("--weight-decay", type=float, default=0.0)
ap.add_argument("--eval-every", type=int, default=50)
ap.add_argument("--log-every", type=int, default=10)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--init", default="fork", help="fork (constructor + model.init_weights()) or a safetensors path (vellum's init)")
ap.add_argument("--no-end", action="store_true", help="do not append <|assistant_end|>")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--freeze", choices=["vision"], help="vision: CLIP and the projector frozen too (vellum's --freeze vision)")
args = ap.parse_args()
sys.path.insert(0, args.nanochat)

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

from torch.utils.data import DataLoader, Dataset  # noqa: E402
from nanochat import nano_deepseek_ocr as ndo  # noqa: E402
from nanochat import tokenizer as nano_tok  # noqa: E402
from nanochat.gpt import GPTConfig  # noqa: E402
from nanochat.vision_dataloader import VisionDataset, collate_fn  # noqa: E402

config = json.load(open(args.config))
sam_cfg, clip_cfg, gpt_cfg = config["sam"], config["clip"], config["gpt"]
base_size = config["base_size"]

# The tiny sizes, through make_deepseek_ocr_fixtures' patch of build_sam_vit_b / build_clip_l.
inference_fixtures.SAM = dict(embed_dim=sam_cfg["embed_dim"], depth=sam_cfg["depth"], num_heads=sam_cfg["num_heads"],
                              global_attn_indexes=sam_cfg["global_attn_indexes"], out_chans=sam_cfg["out_chans"],
                              net_2=sam_cfg["net_2_chans"], net_3=sam_cfg["net_3_chans"])
inference_fixtures.CLIP = dict(hidden_size=clip_cfg["hidden_size"], num_layers=clip_cfg["num_layers"],
                               num_attention_heads=clip_cfg["num_heads"], ffn_hidden_size=clip_cfg["ffn_hidden_size"])
assert (sam_cfg["img_size"], sam_cfg["patch_size"], sam_cfg["window_size"]) == (1024, 16, 14)
inference_fixtures.use_small_encoders()

enc = inference_fixtures.tiny_tiktoken(nano_tok)
tokenizer = nano_tok.RustBPETokenizer(enc, "<|bos|>")
image_id = tokenizer.encode_special("<|image|>")
end_id = tokenizer.encode_special("<|assistant_end|>")
assert image_id == config["image_token_id"] and [end_id] == config["eos_token_ids"] and enc.n_vocab == gpt_cfg["vocab_size"]

train_samples = json.load(open(os.path.join(args.data, "train.json")))
val_samples = json.load(open(os.path.join(args.data, "val.json")))

# vellum's tokenizer.json must agree with the tiktoken ids.
from tokenizers import Tokenizer  # noqa: E402

hf_tok = Tokenizer.from_file(os.path.join(os.path.dirname(args.config), "tokenizer.json"))
for s in {json.dumps([x["prompt"], x["answer"]]) for x in train_samples + val_samples}:
    prompt, answer = json.loads(s)
    assert hf_tok.encode(answer, add_special_tokens=False).ids == tokenizer.encode(answer), answer
    text = prompt.replace("<image>", "<|image|>")
    assert hf_tok.encode(text, add_special_tokens=False).ids == enc.encode(text, allowed_special={"<|image|>"}), text
letters = sorted({x["answer"] for x in train_samples + val_samples})
letter_ids = {tokenizer.encode(a)[0]: a for a in letters}
assert all(len(tokenizer.encode(a)) == 1 for a in letters)
print(f"answers {letters} -> ids {letter_ids}; image {image_id}, end {end_id}; vocab {enc.n_vocab}")

# Model
gcfg = GPTConfig(sequence_len=1024, vocab_size=gpt_cfg["vocab_size"], n_layer=gpt_cfg["n_layer"],
                 n_head=gpt_cfg["n_head"], n_kv_head=gpt_cfg["n_kv_head"], n_embd=gpt_cfg["n_embd"])
vision = ndo.VisionConfig(base_size=base_size, sam_embed_dim=sam_cfg["net_3_chans"], clip_embed_dim=clip_cfg["hidden_size"])
model = ndo.NanoDeepseekOCR(gcfg, vision, image_token_id=image_id)
if args.init == "fork":
    model.init_weights()  # nanochat's GPT init; the encoders keep their constructors' init
    init_desc = "fork: NanoDeepseekOCR constructor + model.init_weights()"
else:
    from safetensors.torch import load_file

    res = model.load_state_dict(load_file(args.init), strict=False)
    # vellum's checkpoint omits CLIP's position_ids buffer and its unused patch_embedding (the SAM
    # features are CLIP's patch embeddings): those keep the constructor's values.
    assert not res.unexpected_keys and set(res.missing_keys) <= {
        "vision_model.embeddings.position_ids", "vision_model.embeddings.patch_embedding.weight"}, res
    init_desc = f"loaded {args.init} (missing: {res.missing_keys})"
print("init:", init_desc)

for part in [model.sam_model] + [model.vision_model, model.projector] * (args.freeze == "vision"):
    for p in part.parameters():
        p.requires_grad = False
params = [p for p in model.parameters() if p.requires_grad]
print(f"params: {sum(p.numel() for p in params):,} trainable / {sum(p.numel() for p in model.parameters()):,} total")
optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)  # betas (0.9, 0.999), eps 1e-8
print("optimizer:", {k: v for k, v in optimizer.defaults.items() if k in ("lr", "betas", "eps", "weight_decay")})


class WithEnd(Dataset):
    def __init__(self, split):
        self.inner = VisionDataset(args.data, tokenizer, split, base_size)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, idx):
        ids, prompt_len, pv, iid = self.inner[idx]
        return (ids if args.no_end else ids + [end_id]), prompt_len, pv, iid


train_ds, val_ds = WithEnd("train"), WithEnd("val")
g = torch.Generator().manual_seed(args.seed)
train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, generator=g, num_workers=0, drop_last=True,
                          collate_fn=lambda b: collate_fn(b, args.seq_len))
val_loader = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=False,
                        collate_fn=lambda b: collate_fn(b, args.seq_len))
val_batches = list(val_loader)
val_prompt_lens = [val_ds[i][1] for i in range(len(val_ds))]
val_answers = [s["answer"] for s in val_ds.inner.samples]
majority = max(val_answers.count(a) for a in letters) / len(val_answers)


def lr_at(step):
    return args.lr * (step + 1) / args.warmup if step < args.warmup else args.lr


def image_dependence(pv):
    """How much the projected image tokens differ between validation pages (RMS over pages of
    each token's deviation from its mean, over the tokens' RMS), and their mean norm."""
    sam = model.sam_model(pv)
    clip = model.vision_model(pv, sam)[:, 1:]
    proj = model.projector(torch.cat([clip, sam.flatten(2).permute(0, 2, 1)], -1))
    spread = (proj - proj.mean(0, keepdim=True)).pow(2).mean().sqrt() / proj.pow(2).mean().sqrt()
    return spread.item(), proj.norm(dim=-1).mean().item()


def evaluate():
    model.eval()
    tot, ntok, preds, firsts = 0.0, 0, [], []
    with torch.no_grad():
        row = 0
        spread, norm = image_dependence(val_batches[0][2])
        for inputs, targets, pv in val_batches:
            loss = model(input_ids=inputs, targets=targets, pixel_values=pv, loss_reduction="sum")
            tot += loss.item()
            ntok += (targets != -1).sum().item()
            logits = model(input_ids=inputs, pixel_values=pv)
            for r in range(inputs.shape[0]):
                pl = val_prompt_lens[row]
                firsts.append(logits[r, pl - 1])
                tok = logits[r, pl - 1].argmax().item()  # greedy first answer token
                preds.append(letter_ids.get(tok, f"<{tok}>"))
                row += 1
    model.train()
    acc = sum(p == a for p, a in zip(preds, val_answers)) / len(val_answers)
    counts = {k: preds.count(k) for k in sorted(set(map(str, preds)))}
    # The first answer token's logits from page to page: 0 when the image does not reach them.
    firsts = torch.stack(firsts)
    logit_spread = (firsts - firsts.mean(0, keepdim=True)).abs().max().item()
    return tot / ntok, acc, counts, f"image tokens: norm {norm:.1f}, page spread {spread:.4f}; answer logits' page spread {logit_spread:.2e}"


print(f"train {len(train_ds)}, val {len(val_ds)} (majority share {majority:.3f}); batch {args.batch_size}, "
      f"seq_len {args.seq_len}, lr {args.lr} warmup {args.warmup} then constant, clip {args.clip}, steps {args.steps}")
vl, acc, counts, dep = evaluate()
print(f"eval step 0 | val loss {vl:.4f} | acc {acc:.3f} | preds {counts} | {dep}", flush=True)

model.train()
it = iter(train_loader)
t_start = time.time()
window = []
for step in range(args.steps):
    try:
        inputs, targets, pv = next(it)
    except StopIteration:
        it = iter(train_loader)
        inputs, targets, pv = next(it)
    lr = lr_at(step)
    for grp in optimizer.param_groups:
        grp["lr"] = lr
    optimizer.zero_grad()
    loss = model(input_ids=inputs, targets=targets, pixel_values=pv)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, args.clip).item()
    optimizer.step()
    window.append(loss.item())
    if (step + 1) % args.log_every == 0:
        el = time.time() - t_start
        print(f"step {step + 1:4d} | loss {loss.item():.4f} (mean last {len(window)}: {sum(window) / len(window):.4f}) | "
              f"lr {lr:.2e} | gnorm {gn:.3f} | {el / (step + 1):.2f}s/step", flush=True)
        window = []
    if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
        vl, acc, counts, dep = evaluate()
        print(f"eval step {step + 1} | val loss {vl:.4f} | acc {acc:.3f} | preds {counts} | {dep}", flush=True)
print(f"done: {args.steps} steps in {time.time() - t_start:.0f}s")
