"""The demo model's tokenizer: byte-level BPE trained on the demo corpus, in DeepSeek-V3's shape.

DeepSeek-V3's pre-tokenizer, normalizer, post-processor and decoder are taken from its
tokenizer.json (tests/data/tokenizer/deepseek_v3_tokenizer.tar.xz); only the BPE vocabulary and
merges are new. Special tokens keep DeepSeek's spelling and flags (BOS, EOS, pad, User/Assistant,
the tool-call markers, FIM) and R1's <think> and </think>, at the lowest ids, so dsv3-tokenize,
both chat templates and the reasoning and tool-call parsers work unchanged.
"""
import json
import lzma
import os
import tarfile

from tokenizers import Tokenizer, pre_tokenizers, trainers

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
# (content, special) in id order: ids 0, 1, 2 as in DeepSeek-V3, then the rest.
SPECIAL_TOKENS = [
    (BOS, True), (EOS, True), (PAD, True), (USER, False), (ASSISTANT, False),
    ("<think>", False), ("</think>", False),
    ("<｜tool▁calls▁begin｜>", False), ("<｜tool▁calls▁end｜>", False),
    ("<｜tool▁call▁begin｜>", False), ("<｜tool▁call▁end｜>", False),
    ("<｜tool▁outputs▁begin｜>", False), ("<｜tool▁outputs▁end｜>", False),
    ("<｜tool▁output▁begin｜>", False), ("<｜tool▁output▁end｜>", False),
    ("<｜tool▁sep｜>", False), ("<｜fim▁hole｜>", False), ("<｜fim▁begin｜>", False),
    ("<｜fim▁end｜>", False), ("<|EOT|>", True),
]


def deepseek_files(repo_root):
    """DeepSeek-V3's tokenizer.json and tokenizer_config.json as dicts."""
    path = os.path.join(repo_root, "tests/data/tokenizer/deepseek_v3_tokenizer.tar.xz")
    with tarfile.open(fileobj=lzma.open(path)) as t:
        tok = json.load(t.extractfile("tokenizer.json"))
        cfg = json.load(t.extractfile("tokenizer_config.json"))
    return tok, cfg


def train_tokenizer(repo_root, texts, vocab_size, out_dir):
    """Trains on `texts` (an iterable of str) and writes tokenizer.json and
    tokenizer_config.json into out_dir. Returns the tokenizers.Tokenizer."""
    ds_tok, ds_cfg = deepseek_files(repo_root)
    skeleton = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": ds_tok["normalizer"], "pre_tokenizer": ds_tok["pre_tokenizer"],
        "post_processor": ds_tok["post_processor"], "decoder": ds_tok["decoder"],
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {}, "merges": []},
    }
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[c for c, _ in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)

    # DeepSeek's flags: User/Assistant, think and tool markers are added but not special.
    data = json.loads(tok.to_str())
    flags = dict(SPECIAL_TOKENS)
    for entry in data["added_tokens"]:
        entry.update(special=flags[entry["content"]], normalized=False, lstrip=False,
                     rstrip=False, single_word=False)
    ids = {e["content"]: e["id"] for e in data["added_tokens"]}
    assert [ids[c] for c, _ in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS))), ids
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)

    cfg = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS,
        "pad_token": EOS, "clean_up_tokenization_spaces": False, "legacy": True,
        "model_max_length": 16384, "unk_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": ds_cfg["chat_template"],
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
    return Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))


def render_chat(question, answer, think=None):
    """One chat turn as DeepSeek-V3's template renders it (think given: R1's shape, reasoning
    then the answer), ready to encode; the model learns to end it with EOS."""
    if think is None:
        return f"{BOS}{USER}{question}{ASSISTANT}{answer}{EOS}"
    return f"{BOS}{USER}{question}{ASSISTANT}<think>\n{think}\n</think>\n\n{answer}{EOS}"
