#!/usr/bin/env python3
"""Writes a synthetic DeepSeek-V3 checkpoint at the real layer sizes, for load benchmarks.

Hugging Face layout: config.json, model-0000i-of-0000N.safetensors shards of about --shard-gb
each (tensors in layer order, as DeepSeek's own shards are) and model.safetensors.index.json.
V3's shapes (hidden 7168, 128 heads, q_lora 1536, kv_lora 512, 256 routed experts of
intermediate 2048, one shared expert, dense intermediate 18432, vocabulary 129280), FP8 e4m3
linear weights with F32 128x128 block scales (weight_scale_inv), BF16 norms, embedding and
lm_head, F32 router. --dense-layers 1 --moe-layers 3 (the default) is 38.7 GB.

The bytes are random but valid for dsv3's value checks: no byte is 0x7f or 0xff, so there is no
FP8 NaN code and no BF16/F32 value with an all-ones exponent (its high byte would be one of
those). They repeat with a 64 MiB period (the disk cannot tell; it keeps the generator at disk
speed). Block scales are uniform in [1e-4, 1e-3], norms 1. Python's standard library only.

  python3 tools/dsv3-bench/make-synthetic-checkpoint.py OUT_DIR [--dense-layers 1] [--moe-layers 3]
      [--shard-gb 4.3]
"""
import argparse
import array
import json
import math
import os
import random
import sys

HIDDEN, HEADS, Q_LORA, KV_LORA = 7168, 128, 1536, 512
NOPE, ROPE, V_DIM = 128, 64, 128
EXPERTS, MOE_INTER, SHARED, DENSE_INTER, VOCAB = 256, 2048, 1, 18432, 129280
BLOCK = 128
PERIOD = 64 << 20


def config(dense, moe):
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": DENSE_INTER,
        "moe_intermediate_size": MOE_INTER, "num_hidden_layers": dense + moe,
        "first_k_dense_replace": dense, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "q_lora_rank": Q_LORA, "kv_lora_rank": KV_LORA,
        "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": V_DIM,
        "n_routed_experts": EXPERTS, "n_shared_experts": SHARED, "num_experts_per_tok": 8,
        "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "scoring_func": "sigmoid", "topk_method": "noaux_tc", "rms_norm_eps": 1e-6,
        "rope_theta": 10000, "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
        "num_nextn_predict_layers": 0, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
    }


def tensors(dense, moe):
    """(name, dtype, shape) in checkpoint order."""
    out = [("model.embed_tokens.weight", "BF16", [VOCAB, HIDDEN])]

    def linear(prefix, n, k):
        out.append((prefix + ".weight", "F8_E4M3", [n, k]))
        out.append((prefix + ".weight_scale_inv", "F32", [-(-n // BLOCK), -(-k // BLOCK)]))

    def mlp(prefix, inter):
        linear(prefix + "gate_proj", inter, HIDDEN)
        linear(prefix + "up_proj", inter, HIDDEN)
        linear(prefix + "down_proj", HIDDEN, inter)

    for i in range(dense + moe):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", "BF16", [HIDDEN]))
        out.append((p + "post_attention_layernorm.weight", "BF16", [HIDDEN]))
        a = p + "self_attn."
        linear(a + "q_a_proj", Q_LORA, HIDDEN)
        out.append((a + "q_a_layernorm.weight", "BF16", [Q_LORA]))
        linear(a + "q_b_proj", HEADS * (NOPE + ROPE), Q_LORA)
        linear(a + "kv_a_proj_with_mqa", KV_LORA + ROPE, HIDDEN)
        out.append((a + "kv_a_layernorm.weight", "BF16", [KV_LORA]))
        linear(a + "kv_b_proj", HEADS * (NOPE + V_DIM), KV_LORA)
        linear(a + "o_proj", HIDDEN, HEADS * V_DIM)
        if i < dense:
            mlp(p + "mlp.", DENSE_INTER)
            continue
        out.append((p + "mlp.gate.weight", "F32", [EXPERTS, HIDDEN]))
        out.append((p + "mlp.gate.e_score_correction_bias", "F32", [EXPERTS]))
        for e in range(EXPERTS):
            mlp(f"{p}mlp.experts.{e}.", MOE_INTER)
        mlp(p + "mlp.shared_experts.", MOE_INTER * SHARED)
    out.append(("model.norm.weight", "BF16", [HIDDEN]))
    out.append(("lm_head.weight", "BF16", [VOCAB, HIDDEN]))
    return out


SIZE = {"F8_E4M3": 1, "BF16": 2, "F32": 4}


def numel(shape):
    return math.prod(shape)


def nbytes(dtype, shape):
    return SIZE[dtype] * numel(shape)


def random_period():
    """PERIOD random bytes with 0x7f/0xff turned into 0x7e/0xfe (see the module comment)."""
    table = bytes(b ^ 1 if b & 0x7F == 0x7F else b for b in range(256))
    return os.urandom(PERIOD).translate(table)


def small(name, shape, rng):
    """Real values for the tensors whose values the loader uses: block scales and norms."""
    n = numel(shape)
    if name.endswith("weight_scale_inv"):
        return array.array("f", (rng.uniform(1e-4, 1e-3) for _ in range(n))).tobytes()
    if name.endswith("layernorm.weight") or name == "model.norm.weight":
        return b"\x80\x3f" * n  # BF16 1.0
    return None


def write_shard(path, entries, period, rng):
    header, offset = {}, 0
    for name, dtype, shape in entries:
        size = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        start = 0
        for name, dtype, shape in entries:
            data = small(name, shape, rng)
            if data is not None:
                f.write(data)
                continue
            size = nbytes(dtype, shape)
            while size > 0:
                piece = memoryview(period)[start % PERIOD: min(PERIOD, start % PERIOD + size)]
                f.write(piece)
                size -= len(piece)
                start += len(piece) + 4096  # tensors do not all begin alike
    return offset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--dense-layers", type=int, default=1)
    ap.add_argument("--moe-layers", type=int, default=3)
    ap.add_argument("--shard-gb", type=float, default=4.3, help="target shard size (V3's are ~4.3)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(0)
    period = random_period()
    all_tensors = tensors(args.dense_layers, args.moe_layers)
    shards, current, size = [], [], 0
    for t in all_tensors:
        b = nbytes(t[1], t[2])
        if current and size + b > args.shard_gb * 1e9:
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += b
    shards.append(current)
    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(args.out, name), entries, period, rng)
        for t in entries:
            weight_map[t[0]] = name
        print(f"{name}: {len(entries)} tensors, {total / 1e9:.1f} GB so far", file=sys.stderr)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config(args.dense_layers, args.moe_layers), f, indent=1)
    print(f"{args.out}: {len(shards)} shards, {total / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
