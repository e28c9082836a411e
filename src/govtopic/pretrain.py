"""Domain-adaptive masked-language-model pre-training (``govtopic pretrain CONFIG``).

Continues a pretrained checkpoint, or starts from a config, on unlabelled 公文 normalised exactly as for
classification. Test-split rows are left out by default. The output folder is a starting point for
``govtopic train`` (``model.name_or_path: RUN/model``, ``model.from_scratch: false``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from govtopic import pooling, runs
from govtopic.config import Config
from govtopic.data import document_text
from govtopic.fsutil import replace_dir
from govtopic.modeling import check_model_sources, load_tokenizer
from govtopic.normalize import normalize_many
from govtopic.record import CONFIG_FILE
from govtopic.runs import RunFolderError, corpus_files
from govtopic.tables import file_format, read_table
from govtopic.windows import tokenize

logger = logging.getLogger(__name__)


def _is_table(path: Path) -> bool:
    try:
        file_format(path)
        return True
    except ValueError:
        return False


def load_texts(cfg: Config) -> list[str]:
    """Unlabelled documents from pretrain.files (or data.train_file), test splits left out."""
    from govtopic.inputs import iter_records

    files = cfg.pretrain.files or ([cfg.data.train_file] if cfg.data.train_file else [])
    if not files:
        raise ValueError("nothing to pre-train on: set pretrain.files (or data.train_file)")
    excluded = {s.lower() for s in cfg.pretrain.exclude_splits}
    texts, dropped = [], 0
    for item in files:
        path = Path(item)
        if path.is_file() and _is_table(path):
            seen: set[str] = set()
            for row in read_table(path):
                split = str(row.get(cfg.data.split_column) or "").lower() if cfg.data.split_column else ""
                seen.add(split)
                if split in excluded:
                    dropped += 1
                    continue
                texts.append(document_text(row, cfg.data))
            _warn_if_nothing_excluded(path, seen - {""}, excluded, cfg.data.split_column)
        else:
            for rec in iter_records([item]):
                if rec.error:
                    raise ValueError(f"{rec.source}: {rec.error}")
                texts.append(rec.text)
    logger.info("%d documents for pre-training (%d rows of excluded splits left out)", len(texts), dropped)
    return [t for t in normalize_many(texts, cfg.normalize) if t.strip()]


def _warn_if_nothing_excluded(path: Path, seen: set[str], excluded: set[str], column: str | None) -> None:
    """A split column or split name that matches nothing leaves test rows in the corpus: say so, naming what the
    table holds (a corpus with no test rows at all is fine, and only told)."""
    if not excluded or not column or seen & excluded:
        return
    if not seen:
        logger.warning(
            "%s has no %r column (data.split_column): none of its rows is left out as %s. If the table marks its "
            "test rows in another column, set data.split_column to it",
            path,
            column,
            "/".join(sorted(excluded)),
        )
    else:
        logger.warning(
            "%s: its %r column holds %s, none of pretrain.exclude_splits %s: no row is left out. If its test rows "
            "are named otherwise, list that name in pretrain.exclude_splits",
            path,
            column,
            ", ".join(sorted(seen)[:10]),
            sorted(excluded),
        )


def word_ids(text: str, starts: np.ndarray) -> np.ndarray:
    """For each token (by its start character) the index of the jieba word that contains it."""
    import jieba

    bounds = np.cumsum([len(w) for w in jieba.cut(text)])
    return np.searchsorted(bounds, starts, side="right")


def sequences(tokenizer, texts: list[str], max_length: int, whole_word: bool) -> dict[str, list]:
    """Consecutive pieces of each document, [CLS] ... [SEP], with word ids for whole-word masking."""
    size = max_length - 2
    out: dict[str, list] = {"input_ids": [], "word_ids": []}
    for text, tok in zip(texts, tokenize(tokenizer, texts)):
        words = word_ids(text, tok.starts) if whole_word else np.arange(len(tok.ids))
        for a in range(0, len(tok.ids), size):
            if len(tok.ids[a : a + size]) < 16:  # a scrap at a document's end teaches little
                continue
            out["input_ids"].append([tokenizer.cls_token_id, *tok.ids[a : a + size].tolist(), tokenizer.sep_token_id])
            out["word_ids"].append([-1, *words[a : a + size].tolist(), -1])
    return out


class WholeWordMasking:
    """Pads a batch and masks whole words (all tokens sharing a word id): 80% [MASK], 10% random, 10% kept."""

    def __init__(self, tokenizer, probability: float = 0.15):
        self.tokenizer, self.probability = tokenizer, probability

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        words = torch.full((len(examples), longest), -1, dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, : len(e["input_ids"])] = torch.as_tensor(e["input_ids"])
            words[i, : len(e["word_ids"])] = torch.as_tensor(e["word_ids"])
        chosen = torch.zeros_like(ids, dtype=torch.bool)
        for i in range(len(examples)):
            unique = torch.unique(words[i][words[i] >= 0])
            picked = unique[torch.rand(len(unique)) < self.probability]
            chosen[i] = torch.isin(words[i], picked)
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        action = torch.rand(ids.shape)
        masked = ids.clone()
        masked[chosen & (action < 0.8)] = self.tokenizer.mask_token_id
        swap = chosen & (action >= 0.8) & (action < 0.9)
        masked[swap] = torch.randint(len(self.tokenizer), (int(swap.sum()),))
        return {"input_ids": masked, "attention_mask": (ids != self.tokenizer.pad_token_id).long(), "labels": labels}


def sparse_mlm_class():
    """BertForMaskedLM whose loss projects onto the vocabulary only at masked positions: on a small model
    that projection is most of the compute, and unmasked positions do not enter the loss anyway."""
    from transformers import BertForMaskedLM
    from transformers.modeling_outputs import MaskedLMOutput

    class SparseBertForMaskedLM(BertForMaskedLM):
        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            if labels is None:
                return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            picked = labels != -100
            if not picked.any():  # nothing masked in this batch: a zero loss, not NaN
                return MaskedLMOutput(loss=hidden.sum() * 0.0)
            logits = self.cls(hidden[picked])
            return MaskedLMOutput(loss=nn.functional.cross_entropy(logits.float(), labels[picked]))

    return SparseBertForMaskedLM


def build_mlm(cfg: Config):
    """A BERT masked-language model: pretrained weights, or random from a config."""
    from transformers import AutoConfig

    m = cfg.model
    config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=False)
    if config.model_type != "bert":
        raise ValueError(f"pre-training supports BERT models; {m.name_or_path} is {config.model_type!r}")
    if getattr(config, pooling.CONFIG_FLAG, False) and not m.from_scratch:
        raise ValueError(
            f"{m.name_or_path} is a fine-tuned govtopic classifier whose last layer is a fixed mean-pooling layer; "
            "continue pre-training from the model it was fine-tuned from instead."
        )
    cls = sparse_mlm_class()
    if not m.from_scratch:
        # model.num_hidden_layers keeps the first layers of the pretrained model, as training does.
        layers = {"num_hidden_layers": m.num_hidden_layers} if m.num_hidden_layers is not None else {}
        return cls.from_pretrained(m.name_or_path, revision=m.revision, use_safetensors=not m.allow_pickle, **layers)
    pooling.drop_from_config(config, keep_layer_count=m.num_hidden_layers is not None)
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if getattr(m, name) is not None:
            setattr(config, name, getattr(m, name))
    return cls(config)


def _set_architecture(config_path: Path, name: str) -> None:
    """save_pretrained writes the subclass name; the folder should name the standard class it loads as."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["architectures"] = [name]
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _check_output_outside_corpus(run_dir: Path, corpus: dict[str, Path]) -> None:
    """A run written into a corpus folder would change the corpus it resumes on (and mix its files with the
    user's): refused."""
    out = run_dir.resolve()
    for key, path in corpus.items():
        if path.is_dir() and out.is_relative_to(path.resolve()):
            raise RunFolderError(
                f"output_dir {run_dir} is inside {key} ({path}), the corpus being read; choose an output_dir "
                "outside it (e.g. output_dir=runs/dapt)"
            )


def _finished(checkpoint: str, cfg: Config) -> bool:
    """Whether the checkpoint is the last step of ``train.max_steps`` (pre-training runs are counted in steps)."""
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return cfg.train.max_steps is not None and state.get("global_step", 0) >= cfg.train.max_steps


def pretrain(cfg: Config) -> Path:
    """Run MLM pre-training; returns the folder to fine-tune from."""
    from datasets import Dataset
    from transformers import Trainer, set_seed

    from govtopic.training import last_checkpoint, training_arguments

    started = time.time()
    check_model_sources(cfg.model)
    set_seed(cfg.train.seed)
    run_dir = Path(cfg.output_dir)
    pc = cfg.pretrain
    # Everything that can fail on the corpus or the model is checked before the run folder is touched.
    _check_output_outside_corpus(run_dir, corpus_files(cfg))
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.revision)
    texts = load_texts(cfg)
    data = Dataset.from_dict(sequences(tokenizer, texts, pc.max_length, pc.whole_word_mask))
    if not len(data):
        raise ValueError(
            f"nothing to pre-train on: the {len(texts)} document(s) read give no piece of 16 tokens or more "
            "(empty or very short texts). Add documents to pretrain.files"
        )
    logger.info("%d sequences of up to %d tokens", len(data), pc.max_length)
    mlm = build_mlm(cfg)
    positions = getattr(mlm.config, "max_position_embeddings", None)
    if positions and pc.max_length > positions:
        raise ValueError(
            f"pretrain.max_length {pc.max_length} is more than the model's {positions} positions; set "
            f"pretrain.max_length to {positions} or less"
        )
    mlm.accepts_loss_kwargs = False  # the sparse loss is a plain mean (see training.train)
    runs.prepare(cfg, command="pretrain")  # only a folder this run made, or its own run's, is written to
    cfg.save(run_dir / CONFIG_FILE)
    args = training_arguments(cfg, run_dir / "checkpoints")
    args.remove_unused_columns = False
    trainer = Trainer(
        model=mlm, args=args, train_dataset=data, data_collator=WholeWordMasking(tokenizer, pc.mlm_probability)
    )
    checkpoint = last_checkpoint(run_dir / "checkpoints") if cfg.train.resume else None
    if checkpoint and _finished(checkpoint, cfg) and (run_dir / "model" / "model.safetensors").is_file():
        # The same run, already done: training again would add a step at learning rate 0 and change nothing.
        logger.info("%s already finished (%s); its model is %s", run_dir, Path(checkpoint).name, run_dir / "model")
        return run_dir / "model"
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if not trainer.is_world_process_zero():
        return run_dir / "model"
    staging = run_dir / "model.partial"
    mlm.save_pretrained(staging, safe_serialization=True)
    _set_architecture(staging / "config.json", "BertForMaskedLM")
    tokenizer.save_pretrained(staging)
    cfg.save(staging / CONFIG_FILE)
    (staging / "pretrain_log.txt").write_text(
        f"sequences {len(data)}\ntrain_loss {result.training_loss:.4f}\nseconds {time.time() - started:.0f}\n",
        encoding="utf-8",
    )
    model_dir = replace_dir(staging, run_dir / "model")
    logger.info("pre-trained model written to %s (loss %.3f)", model_dir, result.training_loss)
    return model_dir
