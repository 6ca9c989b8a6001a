"""An FP8 checkpoint in the compressed-tensors layout (what llm-compressor's FP8 schemes write, and
what allenai/olmOCR-2-7B-1025-FP8 is), made from the tiny Qwen2.5-VL fixture model, and its
dequantized twin.

    pip install torch safetensors
    python tests/reference/make_fp8_fixture.py          # writes tests/fixtures/qwen2_5_vl/fp8/

The scheme, as compressed-tensors documents it (`quantization_config.quant_method =
"compressed-tensors"`, `format = "float-quantized"`): every targeted Linear's `weight` is stored as
float8 e4m3 (safetensors dtype F8_E4M3) beside a `weight_scale`, and the weight the model means is
`weight.float() * weight_scale` — per output channel (scale shape [out, 1], strategy "channel") or
per tensor (a single value, strategy "tensor"). Here the text decoder's attention projections use
channel scales and its MLPs a tensor scale; the vision tower and the LM head are left out (the
`ignore` list), as the published FP8 exports do. Activations are quantized dynamically at run time
by such servers; vellum dequantizes the weights at load and runs in the compute dtype.

Writes fp8/model/ (config.json with quantization_config, model.safetensors, the tokenizer and
processor files) and fp8/twin/ (the same model with the dequantized weights in f32: what the FP8
checkpoint means).
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SRC = os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl", "models", "gqa_window4", "model")
OUT = os.path.join(ROOT, "tests", "fixtures", "qwen2_5_vl", "fp8")
E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max


def quantize(w, strategy):
    if strategy == "channel":
        scale = w.abs().amax(dim=1, keepdim=True) / E4M3_MAX
    else:
        scale = (w.abs().max() / E4M3_MAX).reshape(1)
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale.float()


def main():
    tensors = load_file(os.path.join(SRC, "model.safetensors"))
    quantized, twin = {}, {}
    for name, t in tensors.items():
        strategy = None
        if name.startswith(("model.layers.", "model.language_model.layers.")) and name.endswith(".weight") and t.ndim == 2:
            strategy = "channel" if ".self_attn." in name else "tensor"
        if strategy is None:
            quantized[name], twin[name] = t, t
            continue
        q, scale = quantize(t.float(), strategy)
        quantized[name] = q
        quantized[name[: -len("weight")] + "weight_scale"] = scale
        twin[name] = (q.float() * scale).to(t.dtype)
    shutil.rmtree(OUT, ignore_errors=True)
    for sub, weights in [("model", quantized), ("twin", twin)]:
        d = os.path.join(OUT, sub)
        os.makedirs(d)
        for f in os.listdir(SRC):
            if f != "model.safetensors":
                shutil.copy(os.path.join(SRC, f), d)
        save_file(weights, os.path.join(d, "model.safetensors"))
    config = json.load(open(os.path.join(SRC, "config.json")))
    scheme = lambda strategy: {"weights": {"num_bits": 8, "type": "float", "strategy": strategy, "symmetric": True, "dynamic": False},
                               "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True}}
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {**scheme("channel"), "targets": ["re:.*self_attn.*"]},
            "group_1": {**scheme("tensor"), "targets": ["re:.*mlp.*"]},
        },
        "ignore": ["lm_head", "re:visual.*"],
    }
    json.dump(config, open(os.path.join(OUT, "model", "config.json"), "w"), indent=1)
    n = sum(1 for k in quantized if k.endswith("weight_scale"))
    print(f"{n} weights in float8 e4m3; {OUT}")


if __name__ == "__main__":
    main()
