"""A DeepSeek-V3-architecture model in plain PyTorch, for training the demo model.

The math is ../../shared/SPEC.md's (MLA with q_lora and YaRN rope, dense then MoE layers with a
shared expert and sigmoid, group-limited noaux_tc routing, one MTP module), written for training:
every routed expert runs on every token and the routing weights mask the result (cheap at these
sizes, no gather/scatter), and attention is the naive (up-projected) form through PyTorch's SDPA.
Parameter names follow the Hugging Face checkpoint layout under model.* (see export_tensors in
train.py) so the export is a renaming, and train.py checks the export against transformers.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, weight, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class RmsNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def yarn_mscale(factor, mscale):
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_tables(cfg, positions):
    """cos, sin [T, rope/2] for interleaved pairs (2i, 2i+1), YaRN as SPEC section 3."""
    d, base = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    freqs = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    scale = 1.0
    rs = cfg.get("rope_scaling")
    if rs:
        factor, orig = rs["factor"], rs["original_max_position_embeddings"]

        def corr(r):
            return d * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr(rs["beta_fast"])), 0)
        high = min(math.ceil(corr(rs["beta_slow"])), d - 1)
        span = high - low if high != low else 0.001
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / span).clamp(0, 1)
        freqs = freqs / factor * ramp + freqs * (1 - ramp)
        scale = yarn_mscale(factor, rs["mscale"]) / yarn_mscale(factor, rs["mscale_all_dim"])
    angles = positions.double()[:, None] * freqs[None, :]
    return (angles.cos() * scale).float(), (angles.sin() * scale).float()


def apply_rope(x, cos, sin):
    """x [..., T, rope] with pairs (2i, 2i+1) rotated by the position's angle i."""
    x2 = x.float().unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def softmax_scale(cfg):
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and rs.get("mscale_all_dim"):
        scale *= yarn_mscale(rs["factor"], rs["mscale_all_dim"]) ** 2
    return scale


def linear(n_in, n_out, std):
    lin = nn.Linear(n_in, n_out, bias=False)
    nn.init.normal_(lin.weight, std=std)
    return lin


class Attention(nn.Module):
    def __init__(self, cfg, out_std):
        super().__init__()
        h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nh, self.nope, self.rope = nh, cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
        self.v, self.kv_lora, self.eps = cfg["v_head_dim"], cfg["kv_lora_rank"], cfg["rms_norm_eps"]
        self.scale = softmax_scale(cfg)
        std = cfg["initializer_range"]
        self.q_a_proj = linear(h, cfg["q_lora_rank"], std)
        self.q_a_layernorm = RmsNorm(cfg["q_lora_rank"], self.eps)
        self.q_b_proj = linear(cfg["q_lora_rank"], nh * (self.nope + self.rope), std)
        self.kv_a_proj_with_mqa = linear(h, self.kv_lora + self.rope, std)
        self.kv_a_layernorm = RmsNorm(self.kv_lora, self.eps)
        self.kv_b_proj = linear(self.kv_lora, nh * (self.nope + self.v), std)
        self.o_proj = linear(nh * self.v, h, out_std)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(b, t, self.nh, -1)
        q = q.transpose(1, 2)                                   # [B, nh, T, nope+rope]
        q_nope, q_pe = q[..., :self.nope], apply_rope(q[..., self.nope:], cos, sin)
        kv = self.kv_a_proj_with_mqa(x)                          # [B, T, kv_lora+rope]
        c = self.kv_a_layernorm(kv[..., :self.kv_lora])
        k_pe = apply_rope(kv[..., None, self.kv_lora:].transpose(1, 2), cos, sin)  # [B, 1, T, rope]
        kvb = self.kv_b_proj(c).view(b, t, self.nh, -1).transpose(1, 2)
        k_nope, v = kvb[..., :self.nope], kvb[..., self.nope:]  # [B, nh, T, nope], [.., v]
        k = torch.cat((k_nope, k_pe.expand(-1, self.nh, -1, -1)), dim=-1)
        q = torch.cat((q_nope, q_pe), dim=-1)
        # SDPA kernels want one head dim: pad v to the q/k width and drop the padding after.
        v = F.pad(v, (0, q.shape[-1] - self.v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)[..., :self.v]
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, h, inter, std, out_std):
        super().__init__()
        self.gate_proj = linear(h, inter, std)
        self.up_proj = linear(h, inter, std)
        self.down_proj = linear(inter, h, out_std)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Moe(nn.Module):
    """Routed experts stored stacked ([E, I, H] gate/up, [E, H, I] down) for the all-experts
    training form; e_score_correction_bias is a buffer moved by aux-loss-free balancing."""

    def __init__(self, cfg, out_std):
        super().__init__()
        h, i, e = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]
        std = cfg["initializer_range"]
        self.e, self.k = e, cfg["num_experts_per_tok"]
        self.groups, self.topk_groups = cfg["n_group"], cfg["topk_group"]
        self.scaling = cfg["routed_scaling_factor"]
        self.gate = nn.Parameter(torch.randn(e, h) * std)
        self.register_buffer("e_score_correction_bias", torch.zeros(e))
        self.w_gate = nn.Parameter(torch.randn(e, i, h) * std)
        self.w_up = nn.Parameter(torch.randn(e, i, h) * std)
        self.w_down = nn.Parameter(torch.randn(e, h, i) * out_std)
        self.shared_experts = Mlp(h, i * cfg["n_shared_experts"], std, out_std)
        self.last_load = None  # [E] tokens routed to each expert in the last forward

    def route(self, x):
        """x [N, H] -> expert ids [N, k], weights [N, k] (SPEC: noaux_tc, sigmoid)."""
        with torch.autocast("cuda", enabled=False):  # the router runs in float32, as served
            s = torch.sigmoid(F.linear(x.float(), self.gate.float()))     # [N, E]
        c = s.detach() + self.e_score_correction_bias
        grouped = c.view(-1, self.groups, self.e // self.groups)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)              # [N, G]
        keep = torch.zeros_like(group_score, dtype=torch.bool)
        keep.scatter_(1, group_score.topk(self.topk_groups, dim=-1).indices, True)
        c = c.masked_fill(~keep.repeat_interleave(self.e // self.groups, dim=1), float("-inf"))
        ids = c.topk(self.k, dim=-1).indices
        w = s.gather(1, ids)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.scaling
        return ids, w

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                       # [N, H]
        ids, w = self.route(x)
        self.last_load = torch.bincount(ids.flatten(), minlength=self.e).detach()
        dense_w = torch.zeros(x.shape[0], self.e, device=x.device, dtype=w.dtype)
        dense_w.scatter_(1, ids, w)                                        # [N, E], k non-zeros
        g = torch.einsum("nh,eih->nei", x, self.w_gate)
        u = torch.einsum("nh,eih->nei", x, self.w_up)
        a = F.silu(g) * u * dense_w.to(x.dtype)[..., None]                 # [N, E, I]
        y = torch.einsum("nei,ehi->nh", a, self.w_down)
        return (y + self.shared_experts(x)).view(shape)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, moe):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        # Branch outputs start small (GPT-2's scaled init) so the residual stream stays calm.
        out_std = cfg["initializer_range"] / math.sqrt(2 * (cfg["num_hidden_layers"] + 1))
        self.input_layernorm = RmsNorm(h, eps)
        self.self_attn = Attention(cfg, out_std)
        self.post_attention_layernorm = RmsNorm(h, eps)
        self.mlp = Moe(cfg, out_std) if moe else Mlp(
            h, cfg["intermediate_size"], cfg["initializer_range"], out_std)
        self.dropout = 0.0  # on the branch outputs, training only (not part of the checkpoint)

    def forward(self, x, cos, sin):
        x = x + F.dropout(self.self_attn(self.input_layernorm(x), cos, sin), self.dropout,
                          self.training)
        return x + F.dropout(self.mlp(self.post_attention_layernorm(x)), self.dropout,
                             self.training)


class MtpModule(nn.Module):
    """Depth-1 multi-token prediction (layer id num_hidden_layers in the checkpoint)."""

    def __init__(self, cfg):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.enorm = RmsNorm(h, eps)
        self.hnorm = RmsNorm(h, eps)
        self.eh_proj = linear(2 * h, h, cfg["initializer_range"])
        self.layer = DecoderLayer(cfg, moe=True)
        self.shared_head_norm = RmsNorm(h, eps)


class V3Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        h, v = cfg["hidden_size"], cfg["vocab_size"]
        self.embed_tokens = nn.Embedding(v, h)
        nn.init.normal_(self.embed_tokens.weight, std=1.0)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, moe=i >= cfg["first_k_dense_replace"])
            for i in range(cfg["num_hidden_layers"]))
        self.norm = RmsNorm(h, cfg["rms_norm_eps"])
        self.lm_head = linear(h, v, 1.0 / math.sqrt(h))
        self.mtp = MtpModule(cfg)

    def set_dropout(self, p):
        for l in list(self.layers) + [self.mtp.layer]:
            l.dropout = p

    def moe_layers(self):
        return [l.mlp for l in list(self.layers) + [self.mtp.layer] if isinstance(l.mlp, Moe)]

    def forward(self, tokens, with_mtp=True):
        """tokens [B, T] -> main logits [B, T, V] (position j predicts token j+1) and MTP logits
        [B, T-1, V] (position j, given token j+1, predicts token j+2), or None."""
        t = tokens.shape[1]
        cos, sin = rope_tables(self.cfg, torch.arange(t))
        cos, sin = cos.to(tokens.device), sin.to(tokens.device)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        h = self.norm(x)                                   # [B, T, H], what the MTP module sees
        logits = self.lm_head(h)
        if not with_mtp:
            return logits, None
        m = self.mtp
        e = m.enorm(self.embed_tokens(tokens[:, 1:]))      # embedding of token j+1
        u = m.eh_proj(torch.cat((e, m.hnorm(h[:, :-1])), dim=-1))
        u = m.layer(u, cos[:t - 1], sin[:t - 1])
        return logits, self.lm_head(m.shared_head_norm(u))

    @torch.no_grad()
    def balance_experts(self, gamma):
        """Aux-loss-free balancing (V3 report 2.1.2): after each step, an expert above the mean
        load loses gamma of correction bias, one below gains gamma."""
        for moe in self.moe_layers():
            load = moe.last_load.float()
            moe.e_score_correction_bias += gamma * torch.sign(load.mean() - load)
