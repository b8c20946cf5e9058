"""Export of the trained demo model: Hugging Face DeepSeek-V3 names, FP8 128x128 blocks with
weight_scale_inv = amax/448 (as DeepSeek's released weights, not powers of two), and a check
against transformers on the dequantized weights."""
import copy
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_fixtures  # noqa: E402  (write_checkpoint)

BLOCK = 128
E4M3_MAX = 448.0


def hf_tensors(model):
    """float32 copies of every tensor under the checkpoint's names (SPEC section 2)."""
    out = module_views(model)
    p = f"model.layers.{model.cfg['num_hidden_layers']}."
    # V3 ships the MTP module's copies of the shared embedding and head.
    out[p + "shared_head.head.weight"] = model.lm_head.weight
    out[p + "embed_tokens.weight"] = model.embed_tokens.weight
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def is_fp8_linear(name):
    """Attention and MLP/expert projections are FP8 in V3; router, eh_proj, heads, norms not."""
    return name.endswith("_proj.weight") and (".self_attn." in name or ".mlp." in name)


def quantize(w):
    """w [N, K] -> fp8 [N, K], scale_inv [ceil(N/128), ceil(K/128)] = block amax / 448."""
    n, k = w.shape
    pad = torch.nn.functional.pad(w, (0, (-k) % BLOCK, 0, (-n) % BLOCK))
    blocks = pad.unflatten(0, (-1, BLOCK)).unflatten(2, (-1, BLOCK))  # [nb, 128, kb, 128]
    amax = blocks.abs().amax(dim=(1, 3)).clamp_min(1e-12)             # [nb, kb]
    scale = (amax / E4M3_MAX).float()
    q = (blocks / scale[:, None, :, None]).to(torch.float8_e4m3fn)
    q = q.flatten(2).flatten(0, 1)[:n, :k].contiguous()
    return q, scale


def dequantize(q, scale):
    n, k = q.shape
    s = scale.repeat_interleave(BLOCK, 0)[:n].repeat_interleave(BLOCK, 1)[:, :k]
    return q.float() * s


def config_json(cfg, fp8):
    c = make_fixtures.config_dict({k: v for k, v in cfg.items()})
    if fp8:
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                    "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}
    return c


def load_dequantized(model, deq):
    """A float32 copy of `model` holding the dequantized weights (what the checkpoint means)."""
    m = copy.deepcopy(model).float()
    with torch.no_grad():
        for name, t in module_views(m).items():
            t.copy_(deq[name])
    return m


def module_views(m):
    """Checkpoint name -> the live tensor (a view into m's parameters) that holds it; the MTP
    layer is layer id num_hidden_layers."""
    views = {"model.embed_tokens.weight": m.embed_tokens.weight, "model.norm.weight": m.norm.weight,
             "lm_head.weight": m.lm_head.weight}

    def layer(prefix, l):
        for name, p in l.named_parameters():
            if not (name.startswith("mlp.w_") or name == "mlp.gate"):
                views[prefix + name] = p.data
        if hasattr(l.mlp, "w_gate"):
            views[prefix + "mlp.gate.weight"] = l.mlp.gate.data
            views[prefix + "mlp.gate.e_score_correction_bias"] = l.mlp.e_score_correction_bias
            for e in range(l.mlp.e):
                views[prefix + f"mlp.experts.{e}.gate_proj.weight"] = l.mlp.w_gate.data[e]
                views[prefix + f"mlp.experts.{e}.up_proj.weight"] = l.mlp.w_up.data[e]
                views[prefix + f"mlp.experts.{e}.down_proj.weight"] = l.mlp.w_down.data[e]

    for i, l in enumerate(m.layers):
        layer(f"model.layers.{i}.", l)
    p = f"model.layers.{m.cfg['num_hidden_layers']}."
    layer(p, m.mtp.layer)
    views[p + "enorm.weight"] = m.mtp.enorm.weight.data
    views[p + "hnorm.weight"] = m.mtp.hnorm.weight.data
    views[p + "eh_proj.weight"] = m.mtp.eh_proj.weight.data
    views[p + "shared_head.norm.weight"] = m.mtp.shared_head_norm.weight.data
    return views


def write_checkpoint(model, cfg, out_dir, check_windows, device, log):
    """Writes the FP8 checkpoint into out_dir (next to the tokenizer files already there) and
    checks it with transformers. Returns the check's numbers."""
    f32 = hf_tensors(model)
    ckpt, deq = {}, {}
    for name, t in f32.items():
        if is_fp8_linear(name):
            q, s = quantize(t)
            ckpt[name], ckpt[name + "_scale_inv"] = q, s
            deq[name] = dequantize(q, s)
        elif name.endswith("e_score_correction_bias"):
            ckpt[name] = deq[name] = t
        else:
            ckpt[name] = t.to(torch.bfloat16)
            deq[name] = ckpt[name].float()
    make_fixtures.write_checkpoint(out_dir, config_json(cfg, fp8=True), ckpt, shard_bytes=8 << 20)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        # DeepSeek-V3's published sampling defaults.
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                   "do_sample": True, "temperature": 0.6, "top_p": 0.95}, f, indent=2)
    log(f"FP8 linears: {sum(1 for n in ckpt if n.endswith('_scale_inv'))}; tensors {len(ckpt)}")
    return check_against_transformers(model, cfg, deq, check_windows, device, log)


@torch.no_grad()
def check_against_transformers(model, cfg, deq, windows, device, log):
    """transformers in float32 on the dequantized weights against this code's float32 forward
    on the same weights: the export's names, layout and math agree (relative error)."""
    from transformers import DeepseekV3ForCausalLM

    ours = load_dequantized(model, deq).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        make_fixtures.write_checkpoint(tmp, config_json(cfg, fp8=False), deq, shard_bytes=64 << 20)
        ref, info = DeepseekV3ForCausalLM.from_pretrained(
            tmp, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not info.get("missing_keys"), info["missing_keys"]
    ref = ref.to(device).eval()
    worst = 0.0
    for w in windows:
        x = torch.tensor([w], device=device)
        a = ours(x, with_mtp=False)[0][0]
        b = ref(x).logits[0].float()
        err = ((a - b).norm() / b.norm()).item()
        worst = max(worst, err)
    log(f"export check: transformers float32 vs this forward, max relative error {worst:.2e}")
    assert worst < 1e-4, f"export disagrees with transformers: {worst}"
    return {"max_rel_error_vs_transformers": worst, "windows": len(windows),
            "missing_keys": [], "unexpected_keys_outside_mtp": [
                k for k in info.get("unexpected_keys", [])
                if not k.startswith(f"model.layers.{cfg['num_hidden_layers']}.")]}
