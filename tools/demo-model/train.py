#!/usr/bin/env python3
"""Trains the demo model from scratch and exports it as a DeepSeek-V3 checkpoint.

Runs on the device machine (torch, transformers, tokenizers, safetensors; an H200), on the text
tools/demo-model/prepare_corpus.py wrote on the development machine:

    python3 tools/demo-model/train.py --corpus .cache/demo-corpus --out $OUT/demo

Writes into --out:
  dsv3-demo-fp8/   config.json (quantization_config), FP8 e4m3 weights with 128x128
                   weight_scale_inv = amax/448, tokenizer.json, tokenizer_config.json,
                   generation_config.json, model.safetensors.index.json
  heldout_ids.txt  the Brown test documents tokenized, one window of <= 512 tokens per line
                   (dsv3-eval --ids-file)
  facts.json       sizes, training curve, held-out perplexity, MTP acceptance, sample outputs
and checks the export: transformers' DeepseekV3ForCausalLM in float32 on the dequantized
weights must give this script's logits (relative error < 1e-4).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_tokenizer  # noqa: E402
import export  # noqa: E402
from v3_model import V3Model  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Dimensions FP8 blocks touch are multiples of 128 where V3's are (hidden, q_lora, kv_lora, the
# q_b / kv_b / o_proj widths, expert widths); kv_a has kv_lora + rope rows, like V3's 576.
CONFIG = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
    num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
    q_lora_rank=128, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
    n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
    routed_scaling_factor=2.5, norm_topk_prob=True, scoring_func="sigmoid", topk_method="noaux_tc",
    num_nextn_predict_layers=1, max_position_embeddings=163840, rope_theta=10000,
    rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                  "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    rms_norm_eps=1e-6, initializer_range=0.02, bos_token_id=0, eos_token_id=1,
)
SEQ = 512


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d.strip() for d in f.read().split("\n<doc>\n") if d.strip()]


def read_chats(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def encode_corpus(tok, docs, chats, rng):
    """One stream of ids: each Brown document as BOS text EOS, each chat in the V3 or the R1
    shape (R1 three times in twenty, so that a V3 prompt is answered directly), shuffled at
    document level."""
    pieces = [demo_tokenizer.BOS + d + demo_tokenizer.EOS for d in docs]
    for c in chats:
        think = c["think"] if rng.random() < 0.15 else None
        pieces.append(demo_tokenizer.render_chat(c["question"], c["answer"], think))
    rng.shuffle(pieces)
    ids = []
    for enc in tok.encode_batch(pieces, add_special_tokens=False):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.int64)


def heldout_windows(tok, docs):
    """Each test document as BOS text, cut into windows of at most SEQ tokens."""
    lines = []
    for d in docs:
        ids = tok.encode(demo_tokenizer.BOS + d, add_special_tokens=False).ids
        lines += [ids[i:i + SEQ] for i in range(0, len(ids), SEQ) if len(ids) - i >= 16]
    return lines


@torch.no_grad()
def evaluate(model, windows, device):
    """Mean NLL of main next-token predictions, MTP NLL, and the MTP's greedy acceptance: how
    often its top token at j equals the main model's top token at j+1."""
    model.eval()
    nll = mtp_nll = agree = n = n_mtp = 0.0
    for w in windows:
        x = torch.tensor([w], device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, mtp = model(x)
        logits, mtp = logits.float()[0], mtp.float()[0]
        nll += F.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
        n += len(w) - 1
        if len(w) > 2:
            mtp_nll += F.cross_entropy(mtp[:-1], x[0, 2:], reduction="sum").item()
            agree += (mtp[:-1].argmax(-1) == logits[1:-1].argmax(-1)).sum().item()
            n_mtp += len(w) - 2
    model.train()
    return {"nll": nll / n, "ppl": math.exp(nll / n), "mtp_nll": mtp_nll / n_mtp,
            "mtp_greedy_accept": agree / n_mtp, "tokens": int(n)}


def train(model, data, valid, chat_valid, args, device, log):
    """AdamW with warmup and cosine decay; keeps the state with the best validation score: the
    Brown validation NLL plus the chat validation NLL (the first overfits long before the
    second has learned to copy the asked word)."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1, fused=True)
    best, best_state, curve = None, None, []
    start = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(data) - SEQ - 1, (args.batch, 1), device=device)
        x = data[starts + torch.arange(SEQ + 1, device=device)]           # [B, SEQ+1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, mtp = model(x[:, :-1])
        loss_main = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss_mtp = F.cross_entropy(mtp.float().flatten(0, 1), x[:, 2:].flatten())
        loss = loss_main + args.mtp_weight * loss_mtp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.balance_experts(args.bias_gamma)
        if step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(model, valid, device)
            ev["chat_nll"] = evaluate(model, chat_valid, device)["nll"]
            ev.update(step=step, loss=loss_main.item(), loss_mtp=loss_mtp.item(),
                      seconds=round(time.time() - start, 1))
            curve.append(ev)
            log(json.dumps(ev))
            score = ev["nll"] + ev["chat_nll"]
            if best is None or score < best:
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if time.time() - start > args.max_seconds:
            log(f"time budget reached at step {step}")
            break
    model.load_state_dict(best_state)
    return curve


@torch.no_grad()
def greedy(model, tok, text, device, max_new=40):
    ids = tok.encode(text, add_special_tokens=False).ids
    for _ in range(max_new):
        logits, _ = model(torch.tensor([ids], device=device), with_mtp=False)
        nxt = int(logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == CONFIG["eos_token_id"]:
            break
    return tok.decode(ids, skip_special_tokens=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--mtp-weight", type=float, default=0.3)
    ap.add_argument("--bias-gamma", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = "cuda"
    model_dir = os.path.join(args.out, "dsv3-demo-fp8")
    train_docs = read_docs(os.path.join(args.corpus, "brown_train.txt"))
    chats = read_chats(os.path.join(args.corpus, "chat_train.jsonl"))
    t0 = time.time()
    tok = demo_tokenizer.train_tokenizer(
        REPO, train_docs + [c["question"] + " " + c["think"] + " " + c["answer"] for c in chats],
        CONFIG["vocab_size"], model_dir)
    log(f"tokenizer: {tok.get_vocab_size()} ids in {time.time() - t0:.1f} s")
    assert tok.get_vocab_size() == CONFIG["vocab_size"], tok.get_vocab_size()
    data = encode_corpus(tok, train_docs, chats, rng).to(device)
    valid = heldout_windows(tok, read_docs(os.path.join(args.corpus, "brown_valid.txt")))
    chat_valid = [tok.encode(demo_tokenizer.render_chat(c["question"], c["answer"], c["think"]
                                                        if i % 2 else None),
                             add_special_tokens=False).ids
                  for i, c in enumerate(read_chats(os.path.join(args.corpus, "chat_test.jsonl")))]
    test = heldout_windows(tok, read_docs(os.path.join(args.corpus, "brown_test.txt")))
    log(f"train tokens {len(data)}, valid windows {len(valid)}, test windows {len(test)}")

    model = V3Model(CONFIG).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"parameters {n_params} (MTP {sum(p.numel() for p in model.mtp.parameters())})")
    model.set_dropout(args.dropout)
    curve = train(model, data, valid, chat_valid, args, device, log)
    model.eval()
    final = evaluate(model, test, device)
    log("test " + json.dumps(final))

    with open(os.path.join(args.out, "heldout_ids.txt"), "w") as f:
        for w in test:
            f.write(",".join(map(str, w)) + "\n")
    check = export.write_checkpoint(model, CONFIG, model_dir, test[:3], device, log)
    samples = {p: greedy(model, tok, p, device) for p in [
        demo_tokenizer.BOS + "The jury said",
        demo_tokenizer.BOS + "In the morning",
        demo_tokenizer.render_chat("What does lighthouse mean?", "")[:-len(demo_tokenizer.EOS)],
        demo_tokenizer.BOS + demo_tokenizer.USER + "What does river mean?" +
        demo_tokenizer.ASSISTANT + "<think>\n"]}
    for p, s in samples.items():
        log(f"sample: {s!r}")
    biases = [m.e_score_correction_bias.abs().max().item() for m in model.moe_layers()]
    facts = dict(config=CONFIG, parameters=n_params, train_tokens=len(data), args=vars(args),
                 curve=curve, test=final, export_check=check, samples=samples,
                 max_abs_bias=biases, seconds=round(time.time() - t0, 1),
                 torch=torch.__version__)
    with open(os.path.join(args.out, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
