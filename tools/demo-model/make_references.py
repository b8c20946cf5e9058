#!/usr/bin/env python3
"""Reference logits of the demo model for dsv3-eval --kl-base (docs/quality.md).

Runs where torch and transformers are installed (the device machine):

    python3 tools/demo-model/make_references.py --model DIR/dsv3-demo-fp8 \
        --ids tools/demo-model/heldout_ids.txt --out /tmp/refs

For every line of --ids (one window; dsv3-eval scores positions 0..T-2 of it) it writes the
logits of the scored positions, float32 [N, V] in line order, the layout dsv3-eval --save-logits
writes, for these runs of transformers' DeepseekV3ForCausalLM (eager attention and experts):
  f32.npy         float32 on the FP8 checkpoint's dequantized weights: the model's meaning
  fp8emu.npy      the same float32 model, every FP8 linear's input rounded 1x128 to e4m3
                  (s = amax/448), products in float32: the ideal FP8 engine
  bf16_f32.npy    float32 on the BF16 twin (written to --out/dsv3-demo-bf16: the dequantized
                  weights rounded to BF16, as DeepSeek's fp8_cast_bf16 makes them)
  bf16emu.npy     the float32 model of the twin with every linear's input rounded to BF16,
                  products in float32: the ideal BF16 engine
and two runs the way transformers itself serves these checkpoints, in BF16 (every activation,
the residual stream included, in BF16):
  fp8_bf16model.npy  the FP8 recipe above around the BF16 model (tools/fixtures/
                     make_fp8_reference.py's recipe: products rounded to BF16)
  bf16native.npy     the BF16 twin in BF16
and refs.json: each run against its float32 reference (mean / p99 / max KL divergence, top-1
agreement, perplexities), computed as dsv3-eval computes them.
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode
from transformers import DeepseekV3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
sys.path.insert(0, HERE)
import make_fixtures  # noqa: E402  (write_checkpoint)
import make_fp8_reference as fp8ref  # noqa: E402  (quantize_activations, fp8_parameters)
from export import dequantize  # noqa: E402


def read_checkpoint(model_dir):
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(model_dir, name)))
    return tensors


def write_twin(src_dir, dst_dir, tensors, dtype):
    """The FP8 checkpoint dequantized, in `dtype` (the routing bias stays float32)."""
    out = {}
    for name, t in tensors.items():
        if name.endswith("_scale_inv"):
            continue
        if name + "_scale_inv" in tensors:
            t = dequantize(t, tensors[name + "_scale_inv"])
        out[name] = t.float() if name.endswith("e_score_correction_bias") else t.to(dtype)
    with open(os.path.join(src_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = "float32" if dtype == torch.float32 else "bfloat16"
    make_fixtures.write_checkpoint(dst_dir, cfg, out, shard_bytes=64 << 20)
    for extra in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(src_dir, extra), dst_dir)


class RoundedLinearInputs(TorchFunctionMode):
    """Rounds the input of every linear whose weight is in `storages` with `rounding`; the
    product stays in float32."""

    def __init__(self, storages, rounding):
        super().__init__()
        self.storages, self.rounding, self.used = storages, rounding, set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and isinstance(args[1], torch.Tensor):
            ptr = args[1].untyped_storage().data_ptr()
            if ptr in self.storages:
                self.used.add(ptr)
                return F.linear(self.rounding(args[0]), args[1], *args[2:], **kwargs)
        return func(*args, **kwargs)


def load_model(model_dir, device, dtype=torch.float32):
    return DeepseekV3ForCausalLM.from_pretrained(
        model_dir, dtype=dtype, attn_implementation="eager",
        experts_implementation="eager").to(device).eval()


@torch.no_grad()
def write_logits(model, lines, path, device, mode=None):
    rows = sum(len(l) - 1 for l in lines)
    out = np.lib.format.open_memmap(path, mode="w+", dtype="<f4",
                                    shape=(rows, model.config.vocab_size))
    r = 0
    for ids in lines:
        x = torch.tensor([ids], device=device)
        if mode is None:
            logits = model(x).logits[0]
        else:
            with mode:
                logits = model(x).logits[0]
        out[r:r + len(ids) - 1] = logits[:-1].float().cpu().numpy()
        r += len(ids) - 1
    out.flush()
    return out


def compare(base, test, targets):
    """KL(P_base || P_test) per row, as dsv3-eval: mean, p99 (numpy's percentile), max; top-1
    agreement; perplexity of each on the targets."""
    kl, agree, nll_b, nll_t = [], 0, 0.0, 0.0
    for i in range(0, len(targets), 4096):
        b = torch.from_numpy(np.asarray(base[i:i + 4096])).double()
        t = torch.from_numpy(np.asarray(test[i:i + 4096])).double()
        lb, lt = b.log_softmax(-1), t.log_softmax(-1)
        kl.append((lb.exp() * (lb - lt)).sum(-1))
        agree += (b.argmax(-1) == t.argmax(-1)).sum().item()
        tg = torch.tensor(targets[i:i + 4096])
        nll_b -= lb.gather(1, tg[:, None]).sum().item()
        nll_t -= lt.gather(1, tg[:, None]).sum().item()
    kl = torch.cat(kl).numpy()
    n = len(targets)
    return {"kld_mean": float(kl.mean()), "kld_p99": float(np.percentile(kl, 99)),
            "kld_max": float(kl.max()), "top1_agree": agree / n,
            "ppl_base": math.exp(nll_b / n), "ppl": math.exp(nll_t / n),
            "ppl_ratio": math.exp((nll_t - nll_b) / n), "tokens": n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="the FP8 demo checkpoint")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)
    with open(args.ids) as f:
        lines = [[int(t) for t in l.split(",")] for l in f if l.strip()]
    targets = [t for l in lines for t in l[1:]]
    tensors = read_checkpoint(args.model)
    f32_dir, bf16_dir = os.path.join(args.out, "dsv3-demo-f32"), os.path.join(args.out, "dsv3-demo-bf16")
    write_twin(args.model, f32_dir, tensors, torch.float32)
    write_twin(args.model, bf16_dir, tensors, torch.bfloat16)
    summary = {}

    model = load_model(f32_dir, device)
    f32 = write_logits(model, lines, os.path.join(args.out, "f32.npy"), device)
    params = fp8ref.fp8_parameters(model, args.model)
    fp8 = RoundedLinearInputs({p.untyped_storage().data_ptr() for p in params.values()},
                              fp8ref.quantize_activations)
    emu = write_logits(model, lines, os.path.join(args.out, "fp8emu.npy"), device, fp8)
    assert len(fp8.used) == len(fp8.storages), "some FP8 weight never reached through linear"
    summary["fp8emu_vs_f32"] = compare(f32, emu, targets)

    model = load_model(bf16_dir, device)
    bf16_f32 = write_logits(model, lines, os.path.join(args.out, "bf16_f32.npy"), device)
    linears = {m.weight.untyped_storage().data_ptr() for m in model.modules()
               if isinstance(m, torch.nn.Linear)}
    linears |= {p.untyped_storage().data_ptr() for n, p in model.named_parameters()
                if n.endswith(("gate_up_proj", "down_proj")) and p.dim() == 3}
    bf16 = RoundedLinearInputs(linears, lambda x: x.to(torch.bfloat16).float())
    bf16emu = write_logits(model, lines, os.path.join(args.out, "bf16emu.npy"), device, bf16)
    summary["bf16emu_vs_bf16_f32"] = compare(bf16_f32, bf16emu, targets)
    summary["bf16_f32_vs_f32"] = compare(f32, bf16_f32, targets)

    model = load_model(bf16_dir, device, torch.bfloat16)
    native = write_logits(model, lines, os.path.join(args.out, "bf16native.npy"), device)
    summary["bf16native_vs_bf16_f32"] = compare(bf16_f32, native, targets)
    params = fp8ref.fp8_parameters(model, args.model)
    mode = fp8ref.Fp8Activations({p.untyped_storage().data_ptr(): n for n, p in params.items()})
    fp8_bf16 = write_logits(model, lines, os.path.join(args.out, "fp8_bf16model.npy"), device, mode)
    summary["fp8_bf16model_vs_f32"] = compare(f32, fp8_bf16, targets)
    with open(os.path.join(args.out, "refs.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
