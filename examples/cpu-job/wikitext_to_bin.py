"""Stand-in for MindFormers' research/deepseek3/wikitext_to_bin.py, for tests and demos without MindFormers.

Why: the CPU test images carry MindSpore from PyPI but not MindFormers (nor its tokenizer stack), so the real
script cannot run there. This one keeps its command-line contract (`--input --output-prefix --vocab-file
--seq-length --workers`, the article's `--worker` accepted as an argparse prefix) and its output: the
Wikitext paragraphs (headings dropped), tokenized, stitched and cut into sequences of `seq_length + 1`
int32 tokens, one document each, written as a Megatron MMapIndexedDataset pair
`PREFIX_text_document.bin/.idx` that MindFormers' loader reads. Where MindFormers is installed (the
real-MindFormers CPU image, examples/mindformers-cpu) the pair is written by MindFormers' own
`IndexedDatasetBuilder`, as the real script does; the standard-library writer below is for images without it.

The tokenizer is a crude one: whitespace-split words looked up in tokenizer.json's `model.vocab` (the
Hugging Face tokenizers JSON), with and without the byte-level BPE space marker `Ġ`; unknown words get the
unk id. Good enough for a file of the right shape; not for training a real model. Standard library only,
MindFormers excepted (it runs with the image's Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from array import array

MAGIC = b"MMIDIDX\x00\x00"
INT32 = 4  # Megatron dtype code of int32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="wiki.train.tokens")
    parser.add_argument("--output-prefix", required=True, help="writes PREFIX_text_document.bin/.idx")
    parser.add_argument("--vocab-file", required=True, help="tokenizer.json (Hugging Face tokenizers format)")
    parser.add_argument("--seq-length", type=int, default=4096,
                        help="tokens per sample (each sequence has one more)")
    parser.add_argument("--workers", type=int, required=True,
                        help="accepted for compatibility; one process is used")
    parser.add_argument("--pad-or-stitch", default="stitch", choices=["stitch"],
                        help="only stitch is supported")
    return parser.parse_args(argv)


def load_vocab(path: str) -> tuple[dict[str, int], int, int]:
    """(vocab, unk id, end-of-document id) from a tokenizers JSON."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, list):  # unigram models list [token, score] pairs
        vocab = {item[0]: i for i, item in enumerate(vocab)}
    if not isinstance(vocab, dict) or not vocab:
        sys.exit(f"{path}: no model.vocab in this tokenizer file")
    specials = {t.get("content"): t.get("id") for t in data.get("added_tokens", [])}
    unk_name = (data.get("model") or {}).get("unk_token")
    unk = vocab.get(unk_name) if unk_name else None
    eod = specials.get("<｜end▁of▁sentence｜>", specials.get("</s>"))
    if unk is None:
        unk = vocab.get("<unk>", 0)
    return vocab, unk, eod if eod is not None else unk


def paragraphs(text: str):
    """Wikitext paragraphs (one a line in wiki.*.tokens, blank lines between), `= Heading =` lines dropped."""
    for para in text.splitlines():
        para = para.strip()
        if para and not para.startswith("="):
            yield para


def encode(para: str, vocab: dict[str, int], unk: int) -> list[int]:
    ids = []
    for word in para.split():
        tok = vocab.get("Ġ" + word, vocab.get(word))
        ids.append(unk if tok is None else tok)
    return ids


def write_megatron(prefix: str, sequences: list[array]) -> tuple[str, str]:
    """PREFIX.bin (tokens back to back) and PREFIX.idx (header, int32 sizes, int64 byte offsets, int64 doc
    index)."""
    bin_path, idx_path = prefix + ".bin", prefix + ".idx"
    pointers, offset = [], 0
    with open(bin_path, "wb") as fh:
        for seq in sequences:
            if sys.byteorder != "little":
                seq = array("i", seq)
                seq.byteswap()
            fh.write(seq.tobytes())
            pointers.append(offset)
            offset += len(seq) * 4
    with open(idx_path, "wb") as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<Q", 1))
        fh.write(struct.pack("<B", INT32))
        fh.write(struct.pack("<Q", len(sequences)))
        fh.write(struct.pack("<Q", len(sequences) + 1))  # one document per sequence, doc_idx starts at 0
        fh.write(struct.pack(f"<{len(sequences)}i", *(len(s) for s in sequences)))
        fh.write(struct.pack(f"<{len(sequences)}q", *pointers))
        fh.write(struct.pack(f"<{len(sequences) + 1}q", *range(len(sequences) + 1)))
    return bin_path, idx_path


def mindformers_builder():
    """MindFormers' `IndexedDatasetBuilder` when the image has MindFormers, else None. Its import logs to
    ./output/log unless told otherwise: the log goes to a temporary directory, not beside the script."""
    os.environ.setdefault("LOG_MF_PATH", tempfile.mkdtemp(prefix="mindformers-log-"))
    try:
        from mindformers.dataset.blended_datasets.indexed_dataset import IndexedDatasetBuilder
    except ImportError:
        return None
    return IndexedDatasetBuilder


def write_with_mindformers(builder_class, prefix: str, sequences: list[array]) -> tuple[str, str]:
    """The same pair, written by MindFormers: one document of one sequence each, int32."""
    import numpy

    bin_path, idx_path = prefix + ".bin", prefix + ".idx"
    builder = builder_class(bin_path, dtype=numpy.int32)
    for seq in sequences:
        builder.add_document(numpy.asarray(seq, dtype=numpy.int32), [len(seq)])
    builder.finalize(idx_path)
    return bin_path, idx_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    vocab, unk, eod = load_vocab(args.vocab_file)
    with open(args.input, encoding="utf-8") as fh:
        text = fh.read()
    tokens = array("i")
    docs = 0
    for para in paragraphs(text):
        tokens.extend(encode(para, vocab, unk))
        tokens.append(eod)
        docs += 1
    size = args.seq_length + 1
    sequences = [tokens[i:i + size] for i in range(0, len(tokens) - size + 1, size)]
    out_dir = os.path.dirname(args.output_prefix)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    builder = mindformers_builder()
    if builder is None:
        bin_path, idx_path = write_megatron(args.output_prefix + "_text_document", sequences)
    else:
        bin_path, idx_path = write_with_mindformers(builder, args.output_prefix + "_text_document", sequences)
    print(f"{docs} paragraphs, {len(tokens)} tokens ({sum(t == unk for t in tokens)} unknown) -> "
          f"{len(sequences)} sequences of {size} tokens")
    writer = "MindFormers' IndexedDatasetBuilder" if builder else "the standard-library writer"
    print(f"wrote {bin_path} and {idx_path} with {writer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
