"""Writes a tiny llama-architecture GGUF model for tests and the Quickstart.

Tests need a real llama-server answering real requests, and nothing may be downloaded from
a model hub here. So the project makes its own model: the llama architecture with two
64-wide layers and random weights from a fixed seed, but llama.cpp's real SentencePiece
vocabulary (copied from a vocab-only GGUF in the llama.cpp tree) and a chat template. It
loads in a fraction of a second and generates hundreds of tokens per second on a CPU; what it
writes is gibberish, which is all a gateway test needs.

    python hack/tiny_gguf.py --vocab .../ggml-vocab-llama-spm.gguf --out tiny.gguf
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EMBED, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 64, 2, 4, 2, 128, 2048


def read_vocab(path: Path) -> dict[str, object]:
    reader = GGUFReader(path)

    def value(key: str) -> object:
        return reader.fields[key].contents()

    return {
        "tokens": value("tokenizer.ggml.tokens"),
        "scores": value("tokenizer.ggml.scores"),
        "types": value("tokenizer.ggml.token_type"),
        "model": value("tokenizer.ggml.model"),
        "bos": value("tokenizer.ggml.bos_token_id"),
        "eos": value("tokenizer.ggml.eos_token_id"),
        "unk": value("tokenizer.ggml.unknown_token_id"),
    }


def write_model(vocab: dict[str, object], out: Path, seed: int = 0) -> None:
    tokens = vocab["tokens"]
    assert isinstance(tokens, list)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy's (rows, cols) is ggml's ne = [cols, rows]: rows are output features.
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(EMBED, dtype=np.float32)

    head_dim = EMBED // HEADS
    writer = GGUFWriter(str(out), "llama")
    writer.add_name("llmrouter-tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(1)  # mostly F16
    writer.add_tokenizer_model(str(vocab["model"]))
    writer.add_token_list(tokens)
    writer.add_token_scores(vocab["scores"])  # type: ignore[arg-type]
    writer.add_token_types(vocab["types"])  # type: ignore[arg-type]
    writer.add_bos_token_id(int(vocab["bos"]))  # type: ignore[call-overload]
    writer.add_eos_token_id(int(vocab["eos"]))  # type: ignore[call-overload]
    writer.add_unk_token_id(int(vocab["unk"]))  # type: ignore[call-overload]
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, EMBED))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(KV_HEADS * head_dim, EMBED))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(FFN, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(FFN, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(EMBED, FFN))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", matrix(n_vocab, EMBED))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vocab",
        type=Path,
        required=True,
        help="a vocab-only GGUF, e.g. llama.cpp's models/ggml-vocab-llama-spm.gguf",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.vocab.is_file():
        parser.error(f"--vocab {args.vocab}: no such file")
    write_model(read_vocab(args.vocab), args.out, args.seed)


if __name__ == "__main__":
    main()
