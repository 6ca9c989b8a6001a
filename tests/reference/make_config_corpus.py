"""A corpus of Qwen2.5-VL / Qwen2-VL config files as real transformers versions write them.

vellum parses config.json, preprocessor_config.json and generation_config.json written by many
transformers releases: 4.x puts the text model's fields at the top level with
`rope_scaling: {type: mrope, mrope_section}`, 5.x nests them under `text_config` with
`rope_parameters`, and some releases write one field under two names side by side
(`in_chans` and `in_channels`). This script asks each release itself what it writes.

    python tests/reference/make_config_corpus.py --all      # makes the venvs, writes tests/fixtures/configs

`--all` makes one venv per release under /tmp/cfgvenv-<version> (`pip install transformers==<v>
pillow numpy`; no torch), then runs this same file inside each venv with `--emit`. Releases run
oldest first, because newer ones also re-load the files the oldest one wrote. The README of the
corpus is generated from the files, after every release has written its own.

Per release, tests/fixtures/configs/<version>/ holds, for model in {qwen2_5_vl, qwen2_vl}:
- <model>/config.json                   the config class built with Qwen2.5-VL-7B / Qwen2-VL-7B sizes,
                                         the way that release's constructor takes them (4.x: flat text
                                         fields + rope_scaling; 5.x: text_config=dict(rope_parameters=...))
- <model>/preprocessor_config.json      Qwen2VLImageProcessor(min_pixels=56*28*28, max_pixels=2048*28*28)
- <model>/generation_config.json        the hub checkpoint's GenerationConfig
- <model>_fast/preprocessor_config.json Qwen2VLImageProcessorFast with the same arguments, where the
                                         release has it (it needs torch + torchvision; see --torch-site)
- <model>_in_chans/config.json          as <model>, with the vision config given `in_chans=3` (the
                                         spelling of the hub's own config.json)
- <model>_resaved_from_4x/config.json   AutoConfig.from_pretrained(<oldest 4.x release's <model>/>)
                                         .save_pretrained(): a 4.x-written file re-saved by this release
- <model>_resaved_from_hub/config.json  AutoConfig.from_pretrained(hub_input/<model>/) re-saved: what a
                                         user who re-saves the downloaded hub checkpoint gets
- emit_log.json                          what was made, what was skipped and why, package versions
hub_input/<model>/config.json is the hub checkpoint's config.json layout (Qwen/Qwen2.5-VL-7B-Instruct,
Qwen/Qwen2-VL-7B-Instruct), written by this script, not by transformers.

--torch-site DIR: a site-packages folder holding torch and torchvision, appended to the end of
sys.path of each emitting process (so the venv's own transformers, numpy, pillow still win) so that
the fast image processor can be built without installing torch into every venv. Without it (and
without torch in the venv) the fast processor is skipped and emit_log.json says so.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "configs")

# Oldest first: later releases re-load what the oldest 4.x release wrote.
VERSIONS = ["4.45.2", "4.49.0", "4.50.3", "4.51.3", "4.57.6", "5.0.0", "5.24.0"]
MODELS = ["qwen2_5_vl", "qwen2_vl"]
CONFIG_CLASS = {"qwen2_5_vl": "Qwen2_5_VLConfig", "qwen2_vl": "Qwen2VLConfig"}

# Qwen2.5-VL-7B / Qwen2-VL-7B text model.
TEXT = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "initializer_range": 0.02,
    "use_cache": True,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 28,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
MAX_POS = {"qwen2_5_vl": 128000, "qwen2_vl": 32768}
ROPE_THETA = 1000000.0
MROPE_SECTION = [16, 24, 24]
TOKENS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
VISION = {
    "qwen2_5_vl": {
        "depth": 32,
        "hidden_size": 1280,
        "hidden_act": "silu",
        "intermediate_size": 3420,
        "num_heads": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "out_hidden_size": 3584,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    "qwen2_vl": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 3584,
        "hidden_act": "quick_gelu",
        "mlp_ratio": 4,
        "num_heads": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
GENERATION = {
    "qwen2_5_vl": {"temperature": 0.1},
    "qwen2_vl": {"temperature": 0.01},
}
GENERATION_COMMON = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "top_p": 0.001,
    "top_k": 1,
}
MIN_PIXELS = 56 * 28 * 28
MAX_PIXELS = 2048 * 28 * 28


def hub_config(model):
    """The hub checkpoint's config.json layout (flat text fields, `in_chans`, `spatial_patch_size`,
    `vision_token_id`, `rope_scaling: {type: mrope}`), as Qwen published it."""
    arch = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}
    vision = dict(VISION[model])
    vision["in_chans"] = 3
    vision["spatial_patch_size"] = 14
    return {
        "architectures": [arch[model]],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 3584,
        "initializer_range": 0.02,
        "intermediate_size": 18944,
        "max_position_embeddings": MAX_POS[model],
        "max_window_layers": 28,
        "model_type": model,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": ROPE_THETA,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": vision,
        "rope_scaling": {"type": "mrope", "mrope_section": MROPE_SECTION},
        "vocab_size": 152064,
    }


# ---------------------------------------------------------------------------------------------
# --emit: runs inside one release's venv.


def write_hub_input(root):
    for model in MODELS:
        d = os.path.join(root, "hub_input", model)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hub_config(model), f, indent=2)
            f.write("\n")


def load_relative(auto, root, rel):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return auto.from_pretrained(rel)
    finally:
        os.chdir(cwd)


def build_config(transformers, model, extra_vision):
    major = int(transformers.__version__.split(".")[0])
    cls = getattr(transformers, CONFIG_CLASS[model])
    vision = dict(VISION[model], **extra_vision)
    text = dict(TEXT, max_position_embeddings=MAX_POS[model])
    if major >= 5:
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": MROPE_SECTION, "rope_theta": ROPE_THETA}
        return cls(text_config=text, vision_config=vision, tie_word_embeddings=False, dtype="bfloat16", **TOKENS)
    return cls(
        vision_config=vision,
        rope_theta=ROPE_THETA,
        rope_scaling={"type": "mrope", "mrope_section": list(MROPE_SECTION)},
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
        **text,
        **TOKENS,
    )


def emit(out, ref_root, torch_site):
    if torch_site:
        sys.path.append(torch_site)  # after the venv's own site-packages: only fills in torch/torchvision
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoConfig, GenerationConfig
    from transformers.utils import is_torch_available

    v = transformers.__version__
    out, ref_root = os.path.abspath(out), os.path.abspath(ref_root)
    write_hub_input(ref_root)
    log = {"transformers": v, "python": sys.version.split()[0], "made": [], "skipped": {}}
    for pkg in ("huggingface_hub", "tokenizers", "numpy", "PIL", "torch", "torchvision"):
        try:
            mod = __import__(pkg)
            log[pkg] = getattr(mod, "__version__", "?")
        except Exception:
            log[pkg] = None
    os.makedirs(out, exist_ok=True)

    def note_skip(name, why):
        log["skipped"][name] = why
        print(f"[{v}] skip {name}: {why}", file=sys.stderr)

    def made(name):
        log["made"].append(name)

    for model in MODELS:
        if not hasattr(transformers, CONFIG_CLASS[model]):
            note_skip(model, f"transformers {v} has no {CONFIG_CLASS[model]}")
            continue
        d = os.path.join(out, model)
        build_config(transformers, model, {}).save_pretrained(d)
        made(f"{model}/config.json")

        gen = GenerationConfig(**GENERATION_COMMON, **GENERATION[model])
        gen.save_pretrained(d)
        made(f"{model}/generation_config.json")

        from transformers import Qwen2VLImageProcessor

        Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(d)
        made(f"{model}/preprocessor_config.json")

        fast = getattr(transformers, "Qwen2VLImageProcessorFast", None)
        name = f"{model}_fast/preprocessor_config.json"
        if fast is None:
            note_skip(name, f"transformers {v} has no Qwen2VLImageProcessorFast")
        else:
            try:
                fast(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(os.path.join(out, f"{model}_fast"))
                made(name)
            except Exception as e:  # needs torch + torchvision
                lines = [l.strip() for l in str(e).splitlines() if l.strip()]
                why = f"{type(e).__name__}: {lines[0][:200] if lines else repr(e)}"
                if not is_torch_available():
                    why += f" (transformers {v} sees no usable torch; torch found: {log['torch']})"
                note_skip(name, why)
                shutil.rmtree(os.path.join(out, f"{model}_fast"), ignore_errors=True)

        build_config(transformers, model, {"in_chans": 3}).save_pretrained(os.path.join(out, f"{model}_in_chans"))
        made(f"{model}_in_chans/config.json")

        src = None
        for ref in VERSIONS:
            if ref.startswith("4.") and os.path.exists(os.path.join(ref_root, ref, model, "config.json")):
                src = ref
                break
        name = f"{model}_resaved_from_4x/config.json"
        if src is None:
            note_skip(name, "no 4.x-written config.json to re-load (run the 4.x releases first)")
        elif src == v:
            note_skip(name, f"this release ({v}) wrote the 4.x source itself")
        else:
            # Loaded by a path relative to the corpus root: old releases write it as `_name_or_path`.
            load_relative(AutoConfig, ref_root, f"{src}/{model}").save_pretrained(
                os.path.join(out, f"{model}_resaved_from_4x")
            )
            made(f"{name} (from {src})")

        load_relative(AutoConfig, ref_root, f"hub_input/{model}").save_pretrained(
            os.path.join(out, f"{model}_resaved_from_hub")
        )
        made(f"{model}_resaved_from_hub/config.json")

    with open(os.path.join(out, "emit_log.json"), "w") as f:
        json.dump(log, f, indent=2, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# --all: makes the venvs, runs --emit in each, writes the README.


def venv_python(v):
    return os.path.join("/tmp", f"cfgvenv-{v}", "bin", "python")


def ensure_venv(v):
    py = venv_python(v)
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", os.path.dirname(os.path.dirname(py))], check=True)
    have = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print(m.version('transformers'))"],
        capture_output=True,
        text=True,
    )
    if have.returncode != 0 or have.stdout.strip() != v:
        subprocess.run([py, "-m", "pip", "install", "-q", f"transformers=={v}", "pillow", "numpy"], check=True)
    return py


def run_all(out, versions, torch_site):
    os.makedirs(out, exist_ok=True)
    write_hub_input(out)
    failed = {}
    for v in versions:
        try:
            py = ensure_venv(v)
        except subprocess.CalledProcessError as e:
            failed[v] = f"venv/pip install failed: {e}"
            print(f"[{v}] {failed[v]}", file=sys.stderr)
            continue
        d = os.path.join(out, v)
        shutil.rmtree(d, ignore_errors=True)
        cmd = [py, os.path.abspath(__file__), "--emit", d, "--ref-root", out]
        if torch_site:
            cmd += ["--torch-site", torch_site]
        r = subprocess.run(cmd)
        if r.returncode != 0:
            failed[v] = f"--emit exited {r.returncode}"
    write_readme(out, failed)
    return failed


# ---------------------------------------------------------------------------------------------
# README: what each release writes, read back from the files.

# Same meaning, two names; a strict parser sees both side by side (or has to know both).
ALIAS_PAIRS = [
    ("in_chans", "in_channels"),
    ("patch_size", "spatial_patch_size"),
    ("num_heads", "num_attention_heads"),
    ("depth", "num_hidden_layers"),
    ("torch_dtype", "dtype"),
    ("rope_scaling", "rope_parameters"),
    ("type", "rope_type"),
    ("min_pixels", "shortest_edge"),
    ("max_pixels", "longest_edge"),
]
VARIANTS = ["", "_in_chans", "_resaved_from_4x", "_resaved_from_hub"]


def load(path):
    with open(path) as f:
        return json.load(f)


def vkey(s):
    return [int(x) for x in s.split(".")]


def short(val):
    return json.dumps(val, sort_keys=True, separators=(",", ":"))


def side_by_side(sec, where=""):
    if not isinstance(sec, dict):
        return []
    return [f"{where}{a}={short(sec[a])}+{b}={short(sec[b])}" for a, b in ALIAS_PAIRS if a in sec and b in sec]


def rope_where(cfg):
    parts = []
    for where, sec in (("top", cfg), ("text_config", cfg.get("text_config") or {}), ("vision_config", cfg.get("vision_config") or {})):
        for key in ("rope_scaling", "rope_parameters"):
            if key in sec:
                parts.append(f"{where}.{key}=" + short(sec[key]))
        if "rope_theta" in sec:
            parts.append(f"{where}.rope_theta")
    return "; ".join(parts) or "-"


def text_where(cfg):
    tc = cfg.get("text_config")
    at = (["top"] if "num_hidden_layers" in cfg else []) + (["text_config"] if isinstance(tc, dict) and "num_hidden_layers" in tc else [])
    return " + ".join(at) or "-"


def vision_absent(model, vc):
    need = list(VISION[model])
    absent = [k for k in need if k not in vc]
    if "in_chans" not in vc and "in_channels" not in vc:
        absent.append("in_channels")
    return absent


def conflicts(cfg):
    """Same field, two different values in one file."""
    out = []
    tc = cfg.get("text_config")
    if isinstance(tc, dict):
        for k in sorted(tc):
            if k in cfg and k not in ("model_type", "transformers_version") and cfg[k] != tc[k]:
                out.append(f"{k}: top={short(cfg[k])} text_config={short(tc[k])}")
    for where, sec in (("", cfg), ("text_config.", tc or {})):
        for key in ("rope_scaling", "rope_parameters"):
            r = sec.get(key)
            if isinstance(r, dict) and "type" in r and "rope_type" in r and r["type"] != r["rope_type"]:
                out.append(f"{where}{key}: type={short(r['type'])} rope_type={short(r['rope_type'])}")
    vc = cfg.get("vision_config") or {}
    if "in_chans" in vc and "in_channels" in vc and vc["in_chans"] != vc["in_channels"]:
        out.append(f"vision in_chans={vc['in_chans']} in_channels={vc['in_channels']}")
    return out


def nulls(sec, prefix=""):
    out = []
    for k, val in sorted(sec.items()):
        if val is None:
            out.append(prefix + k)
        elif isinstance(val, dict):
            out += nulls(val, prefix + k + ".")
    return out


def describe_config(model, cfg):
    vc = cfg.get("vision_config") or {}
    tc = cfg.get("text_config")
    dup = sorted(k for k in (tc or {}) if k in cfg and k not in ("model_type", "transformers_version"))
    return {
        "text fields at": text_where(cfg),
        "rope": rope_where(cfg),
        "vision in_chans / in_channels": " + ".join(k for k in ("in_chans", "in_channels") if k in vc) or "neither",
        "vision keys absent (of the 7B set)": ", ".join(vision_absent(model, vc)) or "-",
        "same field under two names": ", ".join(
            side_by_side(cfg) + side_by_side(vc, "vision.") + side_by_side(tc, "text.")
            + side_by_side(cfg.get("rope_scaling"), "rope_scaling.") + side_by_side((tc or {}).get("rope_scaling"), "text.rope_scaling.")
            + side_by_side((tc or {}).get("rope_parameters"), "text.rope_parameters.")
        ) or "-",
        "keys both top and text_config": ", ".join(dup) or "-",
        "conflicting values": "; ".join(conflicts(cfg)) or "-",
        "model_type top / text / vision": " / ".join(
            str(s.get("model_type", "-")) if isinstance(s, dict) else "-" for s in (cfg, tc, vc)
        ),
        "dtype key": ", ".join(
            f"{w}.{k}" for w, s in (("top", cfg), ("text_config", tc or {})) for k in ("torch_dtype", "dtype") if k in s
        ) or "-",
        "null values": ", ".join(nulls(cfg)) or "-",
    }


def describe_preprocessor(pp):
    size = pp.get("size") if isinstance(pp.get("size"), dict) else {}
    bad = []
    if "min_pixels" in pp and "shortest_edge" in size and pp["min_pixels"] != size["shortest_edge"]:
        bad.append(f"min_pixels={pp['min_pixels']} but size.shortest_edge={size['shortest_edge']}")
    if "max_pixels" in pp and "longest_edge" in size and pp["max_pixels"] != size["longest_edge"]:
        bad.append(f"max_pixels={pp['max_pixels']} but size.longest_edge={size['longest_edge']}")
    return {
        "image_processor_type": pp.get("image_processor_type", "-"),
        "top min_pixels/max_pixels": f"{pp['min_pixels']}/{pp.get('max_pixels')}" if "min_pixels" in pp else "absent",
        "size": short(pp["size"]) if "size" in pp else "absent",
        "conflicting values": "; ".join(bad) or "-",
        "null values": ", ".join(nulls(pp)) or "-",
        "all keys": ", ".join(sorted(pp)),
    }


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def summary_row(out, v):
    """One line per release: the layout of its own files."""
    def cfg(name):
        p = os.path.join(out, v, name, "config.json")
        return load(p) if os.path.exists(p) else None

    model = "qwen2_5_vl" if cfg("qwen2_5_vl") else "qwen2_vl"
    base = cfg(model)
    if base is None:
        return None
    d = describe_config(model, base)
    pairs = []
    for m in MODELS:
        for var in VARIANTS:
            c = cfg(m + var)
            if c and "in_chans" in (c.get("vision_config") or {}) and "in_channels" in c["vision_config"]:
                pairs.append(m + var)
    rope = []
    for where, sec in (("top", base), ("text_config", base.get("text_config") or {})):
        for key in ("rope_scaling", "rope_parameters"):
            if isinstance(sec.get(key), dict):
                rope.append(f"{where}.{key}{{{','.join(sorted(sec[key]))}}}")
        if "rope_theta" in sec:
            rope.append(f"{where}.rope_theta")
    vr = (base.get("vision_config") or {}).get("rope_parameters")
    if vr is not None:
        rope.append(f"vision_config.rope_parameters={short(vr)}")
    absent = vision_absent(model, base.get("vision_config") or {})
    pre = []
    for sub in ("", "_fast"):
        p = os.path.join(out, v, model + sub, "preprocessor_config.json")
        if os.path.exists(p):
            dp = describe_preprocessor(load(p))
            size = load(p).get("size", {})
            pre.append(
                f"{dp['image_processor_type']}: "
                + ("min_pixels+max_pixels, " if dp["top min_pixels/max_pixels"] != "absent" else "")
                + "size{" + ",".join(sorted(size)) + "}"
                + (" CONFLICT" if dp["conflicting values"] != "-" else "")
            )
    return [
        v,
        d["text fields at"],
        "; ".join(rope),
        "full" if not absent else f"SPARSE (no {', '.join(absent)})",
        ", ".join(pairs) or "none",
        d["dtype key"],
        "<br>".join(pre) or "-",
    ]


def write_readme(out, failed):
    versions = sorted((d for d in os.listdir(out) if d[0].isdigit() and os.path.isdir(os.path.join(out, d))), key=vkey)
    L = [
        "# Qwen2.5-VL / Qwen2-VL config files as transformers writes them",
        "",
        "Generated by `tests/reference/make_config_corpus.py --all` (do not edit by hand). Each",
        "`<version>/` was written by that transformers release itself (7B sizes); `hub_input/` is the",
        "hub checkpoint layout (written by the script) that `*_resaved_from_hub` re-loads. The script's",
        "docstring says what every folder is; `<version>/emit_log.json` lists what was skipped and why",
        "and the package versions used.",
        "",
        "Reading notes: in Qwen2-VL's vision_config `hidden_size` (the merger's output width, 3584) and",
        "`embed_dim` (the ViT width, 1280) are two different fields, not aliases; in Qwen2.5-VL's",
        "vision_config `hidden_size` is the ViT width (1280) and `out_hidden_size` the merger output.",
        "`vision keys absent` lists keys of the 7B vision config a file leaves out: transformers < 4.51",
        "writes only the vision fields that differ from the vision config class's defaults.",
        "",
    ]
    if failed:
        L += ["Releases that failed: " + "; ".join(f"{k}: {w}" for k, w in failed.items()), ""]

    L += ["## Summary (base folder of each release; in_chans+in_channels over all its folders)", ""]
    rows = [r for r in (summary_row(out, v) for v in versions) if r]
    L += [md_table(["transformers", "text fields at", "rope keys", "vision_config", "folders with in_chans AND in_channels",
                    "dtype key", "preprocessor_config.json (slow; fast)"], rows), ""]

    L += ["## Files", ""]
    rows = []
    for v in versions:
        lp = os.path.join(out, v, "emit_log.json")
        log = load(lp) if os.path.exists(lp) else {}
        folders = sorted(d for d in os.listdir(os.path.join(out, v)) if os.path.isdir(os.path.join(out, v, d)))
        skipped = "; ".join(f"{k}: {w}" for k, w in sorted(log.get("skipped", {}).items())) or "-"
        rows.append([v, ", ".join(folders), skipped])
    L += [md_table(["transformers", "folders", "skipped (why)"], rows), ""]

    for model in MODELS:
        for variant in VARIANTS:
            name = model + variant
            rows = []
            for v in versions:
                p = os.path.join(out, v, name, "config.json")
                if os.path.exists(p):
                    rows.append([v] + list(describe_config(model, load(p)).values()))
            if rows:
                L += [f"## `{name}/config.json`", ""]
                L += [md_table(["transformers"] + list(describe_config(model, {}).keys()), rows), ""]

    L += ["## preprocessor_config.json", "",
          "`<model>/`: Qwen2VLImageProcessor(min_pixels=56*28*28, max_pixels=2048*28*28). In 5.x releases",
          "whose Qwen2VLImageProcessor is the torchvision backend, a venv without a usable torch falls back",
          "to Qwen2VLImageProcessorPil, which writes the type name without the `Pil` suffix and has the",
          "same `__init__` as the torchvision class (read in the source, not run). `<model>_fast/`:",
          "Qwen2VLImageProcessorFast with the same arguments (deprecated alias in late 5.x). Both models'",
          "files come from the same class.", ""]
    rows = []
    for v in versions:
        for sub in ("qwen2_5_vl", "qwen2_5_vl_fast", "qwen2_vl", "qwen2_vl_fast"):
            p = os.path.join(out, v, sub, "preprocessor_config.json")
            if os.path.exists(p):
                rows.append([v, sub] + list(describe_preprocessor(load(p)).values()))
    L += [md_table(["transformers", "folder"] + list(describe_preprocessor({}).keys()), rows), ""]

    L += ["## generation_config.json", ""]
    rows = []
    for v in versions:
        for model in MODELS:
            p = os.path.join(out, v, model, "generation_config.json")
            if os.path.exists(p):
                g = load(p)
                rows.append([v, model, ", ".join(sorted(g)), short(g.get("eos_token_id"))])
    L += [md_table(["transformers", "model", "keys", "eos_token_id"], rows), ""]

    L += ["## Key sets of config.json (base folder)", ""]
    for model in MODELS:
        for v in versions:
            p = os.path.join(out, v, model, "config.json")
            if not os.path.exists(p):
                continue
            cfg = load(p)
            L.append(f"- {v} `{model}`: top = {', '.join(sorted(cfg))}")
            for sec in ("text_config", "vision_config"):
                if isinstance(cfg.get(sec), dict):
                    L.append(f"  - {sec} = {', '.join(sorted(cfg[sec]))}")
    L.append("")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="make the venvs and the whole corpus")
    ap.add_argument("--emit", metavar="OUTDIR", help="write one release's files (run inside its venv)")
    ap.add_argument("--ref-root", default=DEFAULT_OUT, help="corpus root holding the 4.x files to re-load")
    ap.add_argument("--out", default=DEFAULT_OUT, help="corpus root for --all / --readme")
    ap.add_argument("--versions", nargs="*", default=VERSIONS)
    ap.add_argument("--torch-site", help="site-packages with torch+torchvision, for the fast image processor")
    ap.add_argument("--readme", action="store_true", help="only regenerate README.md from the files")
    a = ap.parse_args()
    if a.emit:
        emit(a.emit, a.ref_root, a.torch_site)
    elif a.all:
        failed = run_all(a.out, a.versions, a.torch_site)
        if failed:
            print("failed:", failed, file=sys.stderr)
    elif a.readme:
        write_readme(a.out, {})
    else:
        ap.error("give --all, --emit OUTDIR or --readme")


if __name__ == "__main__":
    main()
