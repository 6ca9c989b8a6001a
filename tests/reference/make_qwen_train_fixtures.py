"""Fine-tuning parity fixtures for vellum's Qwen2.5-VL trainer, from transformers and peft (CPU, f32).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch torchvision transformers peft tiktoken dashscope safetensors pillow
    /tmp/venv/bin/python tests/reference/make_qwen_train_fixtures.py     # writes tests/fixtures/qwen_train

Made with torch 2.4.1, transformers 4.57.6, peft 0.21.2 (transformers 5.x needs torch >= 2.6;
with it the script passes mm_token_type_ids as 5.24 requires). The model is the committed tiny
Qwen2.5-VL tests/fixtures/qwen2_5_vl/models/gqa_window4/model (GQA 4:2; vision blocks 1 and 3
full attention, 0 and 2 windowed), read as it is.

A sample {"prompt", "answer", "image"} becomes what olmOCR's trainer (olmocr/train/dataloader.py,
`Tokenizer`) builds: the chat template's prompt for one user turn (the image first, then the
prompt text without the "<image>" marker and the newline joining it, otherwise exact, as the
engine serves it; olmOCR strips all surrounding whitespace, the same text on these prompts), with the generation
prompt (the template adds its default system turn), tokenized by the processor; then the answer
tokenized alone, then <|im_end|>. Labels are -100 on the prompt and the answer's ids on the rest.
A batch pads on the right (pad id, attention 0, label -100, mm_token_type_ids 0). transformers
>= 5.24 computes M-RoPE only when given mm_token_type_ids, so they are always passed.

The loop is olmOCR's recipe written out (no Trainer, no randomness): torch.optim.AdamW(lr,
weight_decay 0.01, default betas/eps) over the parameters that require grad;
get_linear_schedule_with_warmup with ceil(steps * 0.1) warmup steps; per step: zero_grad,
loss = model(**batch, labels=...).loss (mean over the batch's unmasked tokens), backward,
clip_grad_norm_(params, 1.0) (its return value logged), optimizer.step(), scheduler.step().
Batches: samples [0,1], [2,3], [0,1], ... in file order (the images of a batch differ in size).

Cases, each <case>/case.json (+ expected.safetensors where named):
- full:          every parameter trains, 5 steps. step 0's gradient of every parameter (grad.<name>),
                 the gradient of the second batch at the initial weights (grad_batch1.<name>),
                 every parameter after the last step (final.<name>), and greedy tokens that the
                 fine-tuned model generates for val sample 0 (max 12 new tokens) with their margins.
- freeze_vision: visual.* frozen (requires_grad False), 3 steps: log only.
- lora:          peft LoraConfig(r=4, lora_alpha=8, q/k/v/o_proj, dropout 0), 5 steps. init/ is the
                 adapter before training (peft's save_pretrained: adapter_config.json,
                 adapter_model.safetensors), trained/ after; expected.safetensors: step 0's gradient
                 of every adapter tensor (grad.<peft name>) and merged.<name> for each target weight
                 of merge_and_unload() on trained/.
"""

import argparse
import json
import math
import os
import shutil
import sys

import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2TokenizerFast, Qwen2VLImageProcessor, get_linear_schedule_with_warmup
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

sys.path.insert(0, os.path.dirname(__file__))
from make_qwen2_5_vl_fixtures import TEMPLATE, synthetic_page  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl", "models", "gqa_window4", "model")
LR = 2e-3
WEIGHT_DECAY = 0.01
CLIP = 1.0

# Sizes that need no resize (multiples of 28 within the model's pixel bounds), so the pixels are
# the processor's exactly; two sizes per batch.
SAMPLES = [
    ("p0", 140, 196, "<image>\nRead this page.", "Hello world. The quick brown fox."),
    ("p1", 84, 112, "Transcribe the text.\n<image>", "Invoice 2026-11-29\nTotal: 1234.56"),
    ("p2", 112, 84, "<image>", "---\nprimary_language: en\nis_rotation_valid: True\n---\nA table."),
    ("p3", 168, 140, "<image>\nRead this page.", "Numbers: 3.14159 and naive cafe."),
]
VAL = [("v0", 140, 112, "<image>\nRead this page.", "The end.")]


def qwen_processor(tokenizer_file, image_processor):
    """transformers' Qwen2.5-VL processor over a tokenizer.json, with the chat template vellum ships."""
    tokenizer = Qwen2TokenizerFast(tokenizer_file=tokenizer_file, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE)


def write_data(out):
    os.makedirs(os.path.join(out, "images"))
    for split, rows, seed in (("train", SAMPLES, 500), ("val", VAL, 600)):
        entries = []
        for i, (sid, w, h, prompt, answer) in enumerate(rows):
            name = f"images/{sid}.png"
            synthetic_page(w, h, seed=seed + i).save(os.path.join(out, name))
            entries.append({"id": sid, "type": "document", "prompt": prompt, "answer": answer, "image": name})
        json.dump(entries, open(os.path.join(out, f"{split}.json"), "w"), indent=1)


def exact_instruction(prompt):
    """The prompt without its image marker and the one newline joining it to the text, otherwise
    exact: the instruction the engine serves a page with. (olmOCR's trainer strips all surrounding
    whitespace, which drops the newline RolmOCR's prompt ends with; vellum trains on what it serves.)
    On this script's prompts both give the same text."""
    before, marker, after = prompt.partition("<image>")
    if not marker:
        return prompt
    before = before[:-1] if before.endswith("\n") else before
    after = after[1:] if after.startswith("\n") else after
    return before + after.replace("<image>", "")


def encode(processor, data_dir, sample):
    tok = processor.tokenizer
    img = Image.open(os.path.join(data_dir, sample["image"]))
    instruction = exact_instruction(sample["prompt"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[img], return_tensors="pt")
    answer = tok(sample["answer"], add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    prompt_ids = inputs["input_ids"][0].tolist()
    return {
        "input_ids": prompt_ids + answer,
        "labels": [-100] * len(prompt_ids) + answer,
        # transformers < 5 has no mm_token_type_ids (it finds images by their token id).
        "mm": inputs["mm_token_type_ids"][0].tolist() + [0] * len(answer) if "mm_token_type_ids" in inputs else None,
        "pixel_values": inputs["pixel_values"],
        "grid": inputs["image_grid_thw"][0],
        "prompt_len": len(prompt_ids),
    }


def collate(items, pad_id):
    n = max(len(it["input_ids"]) for it in items)
    pad = lambda xs, v: xs + [v] * (n - len(xs))  # noqa: E731
    batch = {
        "input_ids": torch.tensor([pad(it["input_ids"], pad_id) for it in items]),
        "attention_mask": torch.tensor([pad([1] * len(it["input_ids"]), 0) for it in items]),
        "labels": torch.tensor([pad(it["labels"], -100) for it in items]),
        "pixel_values": torch.cat([it["pixel_values"] for it in items]),
        "image_grid_thw": torch.stack([it["grid"] for it in items]),
    }
    if items[0]["mm"] is not None:
        batch["mm_token_type_ids"] = torch.tensor([pad(it["mm"], 0) for it in items])
    return batch


def train(model, batches, steps):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(steps * 0.1), steps)
    log, grads0 = [], None
    model.train()
    for step in range(steps):
        batch = batches[step % len(batches)]
        opt.zero_grad()
        lr = opt.param_groups[0]["lr"]
        out = model(**batch)
        out.loss.backward()
        if step == 0:
            grads0 = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        log.append({"step": step, "loss": out.loss.item(), "lr": lr, "grad_norm": norm.item(), "tokens": tokens})
        print(f"  step {step}: loss {out.loss.item():.6f} lr {lr:.3e} grad_norm {norm.item():.4f} tokens {tokens}")
    model.eval()
    return log, grads0


def load_model():
    config = Qwen2_5_VLConfig.from_pretrained(MODEL)
    if int(transformers.__version__.split(".")[0]) < 5:
        # The checkpoint's config is 5.x's; 4.x reads M-RoPE from rope_scaling and rope_theta.
        rope = json.load(open(os.path.join(MODEL, "config.json")))["text_config"]["rope_parameters"]
        for c in (config, config.text_config):
            c.rope_scaling = {"type": "default", "rope_type": "default", "mrope_section": rope["mrope_section"]}
            c.rope_theta = rope["rope_theta"]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(MODEL, config=config, torch_dtype=torch.float32, attn_implementation="eager")
    model.config.use_cache = False
    return model


def case_json(d, **kw):
    os.makedirs(d, exist_ok=True)
    json.dump(dict(lr=LR, weight_decay=WEIGHT_DECAY, grad_clip=CLIP, warmup_ratio=0.1, batch_size=2, **kw), open(os.path.join(d, "case.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "qwen_train"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    shutil.rmtree(args.out, ignore_errors=True)
    data = os.path.join(args.out, "data")
    write_data(data)

    pp = json.load(open(os.path.join(MODEL, "preprocessor_config.json")))
    processor = qwen_processor(os.path.join(MODEL, "tokenizer.json"), Qwen2VLImageProcessor(min_pixels=pp["min_pixels"], max_pixels=pp["max_pixels"]))
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    train_rows = json.load(open(os.path.join(data, "train.json")))
    items = [encode(processor, data, s) for s in train_rows]
    batches = [collate(items[i : i + 2], pad_id) for i in range(0, len(items), 2)]
    encoded = [{"input_ids": it["input_ids"], "labels": it["labels"], "grid": it["grid"].tolist()} for it in items]

    print("full")
    model = load_model()
    model.train()
    model(**batches[1]).loss.backward()
    grads_b1 = {f"grad_batch1.{n}": p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    model = load_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log, grads0 = train(model, batches, 5)
    tensors = {f"grad.{n}": g.contiguous() for n, g in grads0.items()}
    tensors.update(grads_b1)
    tensors.update({f"final.{n}": p.detach().contiguous() for n, p in model.named_parameters()})
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters()), "every parameter moves"
    val = encode(processor, data, json.load(open(os.path.join(data, "val.json")))[0])
    with torch.no_grad():
        prompt = torch.tensor([val["input_ids"][: val["prompt_len"]]])
        gc = GenerationConfig(max_new_tokens=12, min_new_tokens=0, do_sample=False, eos_token_id=None, pad_token_id=pad_id, bos_token_id=None)
        mm = {} if val["mm"] is None else {"mm_token_type_ids": torch.tensor([val["mm"][: val["prompt_len"]]])}
        gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=val["pixel_values"], image_grid_thw=val["grid"][None],
                             generation_config=gc, output_logits=True, return_dict_in_generate=True, **mm)
    greedy = gen.sequences[0, prompt.shape[1]:].tolist()
    top2 = torch.stack(gen.logits)[:, 0].topk(2, -1).values
    d = os.path.join(args.out, "full")
    case_json(d, steps=5, freeze=None, log=log, encoded=encoded, greedy_tokens=greedy, greedy_margins=(top2[:, 0] - top2[:, 1]).tolist())
    save_file(tensors, os.path.join(d, "expected.safetensors"))

    print("freeze_vision")
    model = load_model()
    for n, p in model.named_parameters():
        if ".visual." in f".{n}":
            p.requires_grad_(False)
    log, _ = train(model, batches, 3)
    case_json(os.path.join(args.out, "freeze_vision"), steps=3, freeze="vision", log=log)

    print("lora")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = get_peft_model(load_model(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none"))
    d = os.path.join(args.out, "lora")
    model.save_pretrained(os.path.join(d, "init"))
    log, grads0 = train(model, batches, 5)
    model.save_pretrained(os.path.join(d, "trained"))
    tensors = {f"grad.{n}": g.contiguous() for n, g in grads0.items()}
    merged = model.merge_and_unload()
    for n, p in merged.named_parameters():
        if any(f".{t}." in n for t in targets):
            tensors[f"merged.{n}"] = p.detach().contiguous()
    case_json(d, steps=5, freeze=None, lora={"r": 4, "alpha": 8, "targets": targets}, log=log)
    save_file(tensors, os.path.join(d, "expected.safetensors"))
    for sub in ("init", "trained"):
        for f in os.listdir(os.path.join(d, sub)):
            assert f in {"adapter_config.json", "adapter_model.safetensors", "README.md"}, f
        readme = os.path.join(d, sub, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        # The base model relative to the repository root (tests run from there), not this machine's path.
        cfg_path = os.path.join(d, sub, "adapter_config.json")
        cfg = json.load(open(cfg_path))
        cfg["base_model_name_or_path"] = os.path.relpath(MODEL, ROOT)
        json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
