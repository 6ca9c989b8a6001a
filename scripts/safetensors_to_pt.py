#!/usr/bin/env python3
"""A vellum nano DeepSeek-OCR model directory (e.g. `ocr train`'s <out>/final) back to the PyTorch
state dict the nanochat fork's trainer writes (`step_N.pt`), which its code loads with
`model.load_state_dict(torch.load(path))`.

    python scripts/safetensors_to_pt.py runs/s2/final/model.safetensors step_4000.pt

The tensor names are the fork's already (vellum keeps the checkpoint's names); the int64
`vision_model.embeddings.position_ids` buffer is written back as int64.
"""

import sys

import torch
from safetensors.torch import load_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    state = load_file(sys.argv[1])
    torch.save({k: v.contiguous() for k, v in state.items()}, sys.argv[2])
    print(f"{len(state)} tensors -> {sys.argv[2]}")


if __name__ == "__main__":
    main()
