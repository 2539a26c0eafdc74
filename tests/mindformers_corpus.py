"""The differential test's corpus: shipped MindFormers configs at several device counts, the article's 1B
config, the tiny CPU Llama, and broken variants, each a rule MindFormers enforces (tests/test_mindformers_differential.py).

A `Case` names the key a rejection must name. Variants are made with the kit's round-trip YAML editor from
configs that both sides accept, one mutation each, so a rejection can only come from that mutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ascend_run.mfconfig import JobContext, derive_config
from ascend_run.mfconfig.yamledit import Document, parse_key_path
from ascend_run.sim.mindformers import CONFIG as TINY_LLAMA
from tests.mfconfig_support import R15_FINETUNE, R15_PREDICT, R15_PRETRAIN, V21_PREDICT, V21_PRETRAIN

DP = "parallel_config.data_parallel"


@dataclass(frozen=True)
class Case:
    id: str
    path: Path
    npus: int
    key: str | None = None   # the key a rejection must name (None: a valid config)


def shipped() -> list[Case]:
    """Every shipped train/finetune/predict file at 8, 32, 256 and 1024 devices; a wrong count names dp."""
    files = {"r1.5.0/pretrain": R15_PRETRAIN, "r1.5.0/finetune": R15_FINETUNE, "r1.5.0/predict": R15_PREDICT,
             "v2.1.0/pretrain": V21_PRETRAIN, "v2.1.0/predict": V21_PREDICT}
    return [Case(f"{name}@{npus}", path, npus, DP) for name, path in files.items() for npus in (8, 32, 256, 1024)]


# (id, base, npus, {key: value} edits (None deletes), the key a rejection must name)
MUTATIONS: list[tuple[str, str, int, dict[str, Any], str]] = [
    ("recompute longer than pp", "v21", 256, {"recompute_config.recompute": [1] * 9}, "recompute_config.recompute"),
    ("select_recompute longer than pp", "v21", 256, {"recompute_config.select_recompute": [1] * 9},
     "recompute_config.select_recompute"),
    ("select_comm_recompute longer than pp", "r15", 1024, {"recompute_config.select_comm_recompute": [0] * 17},
     "recompute_config.select_comm_recompute"),
    ("MoE with tensor parallel but no sequence parallel", "r15", 1024, {"parallel_config.use_seq_parallel": False},
     "parallel_config.use_seq_parallel"),
    ("sequence parallel without tensor parallel", "a1b", 8,
     {"parallel_config.model_parallel": 1, "parallel_config.data_parallel": 4},
     "parallel_config.use_seq_parallel"),
    ("context parallel without flash attention", "v21", 256,
     {"parallel_config.context_parallel": 2, "parallel_config.data_parallel": 2, "parallel_config.expert_parallel": 16,
      "model.model_config.use_flash_attention": False, "model.model_config.use_attn_mask_compression": False},
     "model.model_config.use_flash_attention"),
    ("mask compression without flash attention", "v21", 256, {"model.model_config.use_flash_attention": False},
     "model.model_config.use_flash_attention"),
    ("fine-grain interleave without sequence parallel", "r15", 1024,
     {"model.model_config.fine_grain_interleave": 2, "parallel_config.use_seq_parallel": False,
      "parallel_config.model_parallel": 1, "parallel_config.data_parallel": 64},
     "model.model_config.fine_grain_interleave"),
    ("two MTP layers", "v21", 256, {"model.model_config.num_nextn_predict_layers": 2},
     "model.model_config.num_nextn_predict_layers"),
    ("heads not divisible by tensor parallel", "a1b", 8, {"model.model_config.num_heads": 5},
     "model.model_config.num_heads"),
    ("more dense layers than layers", "a1b", 8, {"moe_config.first_k_dense_replace": 5},
     "moe_config.first_k_dense_replace"),
    ("layer count as a string", "v21", 256, {"model.model_config.num_hidden_layers": "61"},
     "model.model_config.num_hidden_layers"),
    ("unknown run_mode", "a1b", 8, {"run_mode": "training"}, "run_mode"),
    ("unknown context.mode", "v21", 256, {"context.mode": 2}, "context.mode"),
    ("unknown parallel_mode", "r15", 1024, {"parallel.parallel_mode": 4}, "parallel.parallel_mode"),
    ("predict with flash attention and no KV cache", "r15p", 32, {"model.model_config.use_past": False},
     "model.model_config.use_past"),
    # MindFormers accepts these (the kit's table says why it does not)
    ("offset sum wrong", "a1b", 8, {"model.model_config.offset": 1}, "model.model_config.offset"),
    ("MTP offset rule (2.x splits num_hidden_layers alone)", "v21", 256,
     {"model.model_config.offset": [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, -1]]},
     "model.model_config.offset"),
    ("experts not divisible by expert parallel", "a1b", 8, {"parallel_config.expert_parallel": 3},
     "parallel_config.expert_parallel"),
    ("fewer micro batches than stages", "a1b", 8, {"parallel_config.micro_batch_num": 1},
     "parallel_config.micro_batch_num"),
    ("fewer layers than stages", "a1b", 8, {"model.model_config.num_layers": 1, "moe_config.first_k_dense_replace": 0},
     "model.model_config.num_layers"),
    ("hidden size not divisible by heads", "a1b", 8, {"model.model_config.hidden_size": 2050},
     "model.model_config.hidden_size"),
    ("dataset_strategy not data_parallel", "r15", 1024, {"parallel.dataset_strategy": [[8, 1]] * 4},
     "parallel.dataset_strategy[0][0]"),
    ("dataset seq_length not the model's", "a1b", 8, {"train_dataset.data_loader.config.seq_length": 2048},
     "train_dataset.data_loader.config.seq_length"),
    ("bias balancer copy of num_layers", "r15", 1024, {"text": ("num_layers: *num_layers", "num_layers: 60")},
     "callbacks[1].num_layers"),
]


def article_1b(directory: Path) -> Path:
    """The article's 1B config, derived by the kit (valid at 8 NPUs)."""
    path = directory / "pretrain_deepseek3_1b.yaml"
    if not path.exists():
        derive_config(R15_PRETRAIN, preset="article-1b", job=JobContext(npus=8), output=path)
    return path


def mutate(base: Path, edits: dict[str, Any], out: Path) -> Path:
    """One broken variant: `edits` applied with the round-trip editor (None deletes, missing keys added);
    `{"text": (old, new)}` replaces text instead (an alias made a literal, which the editor would not do)."""
    if "text" in edits:
        old, new = edits["text"]
        text = base.read_text(encoding="utf-8")
        assert old in text, (base, old)
        out.write_text(text.replace(old, new, 1), encoding="utf-8")
        return out
    doc = Document.from_path(base)
    for key, value in edits.items():
        path = parse_key_path(key)
        if value is None:
            doc.delete(path)
        else:
            doc.set(path, value, create=not doc.has(path))
    out.write_text(doc.dump(), encoding="utf-8")
    return out


def corpus(directory: Path) -> list[Case]:
    directory.mkdir(parents=True, exist_ok=True)
    bases = {"r15": R15_PRETRAIN, "v21": V21_PRETRAIN, "r15p": R15_PREDICT, "a1b": article_1b(directory)}
    cases = shipped() + [Case("article 1B@8", bases["a1b"], 8), Case("tiny CPU Llama@2", TINY_LLAMA, 2)]
    for number, (name, base, npus, edits, key) in enumerate(MUTATIONS):
        path = mutate(bases[base], edits, directory / f"variant-{number:02d}.yaml")
        cases.append(Case(name, path, npus, key))
    return cases
