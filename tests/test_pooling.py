"""Mean pooling built from a fixed encoder layer: what the classifier reads, and that plain transformers agrees."""

from __future__ import annotations

import pytest
import torch

from conftest import TOKENIZER_DIR
from govtopic import pooling
from govtopic.config import ModelConfig
from govtopic.modeling import build_for_training

LABELS = ["a\\x", "a\\y", "b"]


def tiny(pool: str = "mean", **kw):
    cfg = ModelConfig(
        name_or_path=str(TOKENIZER_DIR),
        from_scratch=True,
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=128,
        pooling=pool,
        **kw,
    )
    torch.manual_seed(0)
    return build_for_training(cfg, LABELS)


def batch():
    torch.manual_seed(1)
    ids = torch.randint(1000, 8000, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    mask[2, 5:] = 0
    return ids, mask


def reference_mean_pool(model, input_ids, attention_mask):
    """LayerNorm(mean of the last real layer's states over the real tokens), computed directly."""
    out = model.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    before = out.hidden_states[-2]
    mask = attention_mask[..., None].to(before.dtype)
    return model.bert.encoder.layer[-1].output.LayerNorm((before * mask).sum(1) / mask.sum(1))


def test_classifier_reads_the_mean_of_real_tokens():
    model = tiny().eval()
    ids, mask = batch()
    with torch.no_grad():
        cls_state = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        expected = reference_mean_pool(model, ids, mask)
    assert torch.allclose(cls_state, expected, atol=2e-2)
    # Padding changes nothing: the second document cut to its real tokens gives the same vector.
    with torch.no_grad():
        alone = model.bert(input_ids=ids[1:2, :20], attention_mask=mask[1:2, :20]).last_hidden_state[:, 0]
    assert torch.allclose(alone, cls_state[1:2], atol=1e-4)


def test_every_token_counts_with_mean_pooling_and_cls_does_not_add_a_layer():
    mean_model, cls_model = tiny("mean"), tiny("cls")
    assert mean_model.config.num_hidden_layers == 3 and cls_model.config.num_hidden_layers == 2
    assert not pooling.has_pooling_layer(cls_model)
    trainable = [n for n, p in mean_model.named_parameters() if p.requires_grad and "layer.2." in n]
    assert sorted(trainable) == [
        "bert.encoder.layer.2.output.LayerNorm.bias",
        "bert.encoder.layer.2.output.LayerNorm.weight",
    ]
    # Changing a token far from [CLS] moves the pooled vector.
    model = mean_model.eval()
    ids, mask = batch()
    changed = ids.clone()
    changed[0, 30] = 4000 if ids[0, 30] != 4000 else 4001
    with torch.no_grad():
        a = model(input_ids=ids[:1], attention_mask=mask[:1]).logits
        b = model(input_ids=changed[:1], attention_mask=mask[:1]).logits
    assert not torch.allclose(a, b)


def test_saved_folder_loads_in_plain_transformers_with_identical_logits(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tiny().eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "BertForSequenceClassification"
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
        )


def test_fine_tuning_a_govtopic_model_again_keeps_one_pooling_layer(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    again = build_for_training(ModelConfig(name_or_path=str(tmp_path), pooling="mean"), LABELS)
    assert again.config.num_hidden_layers == 3
    frozen = [n for n, p in again.named_parameters() if not p.requires_grad]
    assert "bert.encoder.layer.2.attention.self.query.weight" in frozen
    # Built from its config alone, a model gets fresh encoder layers and one new pooling layer.
    fresh = build_for_training(ModelConfig(name_or_path=str(tmp_path), from_scratch=True, pooling="mean"), LABELS)
    assert fresh.config.num_hidden_layers == 3


def test_architecture_without_bert_attention_gets_a_clear_error():
    class NotBert(torch.nn.Module):
        config = None

    with pytest.raises(pooling.PoolingError, match="model.pooling: cls"):
        pooling.add_pooling_layer(NotBert())


def test_pretraining_starts_from_the_encoder_not_the_pooling_layer(tmp_path):
    from govtopic.config import load_config
    from govtopic.pretrain import build_mlm

    tiny().save_pretrained(tmp_path)
    fresh = build_mlm(load_config(None, [f"model.name_or_path={tmp_path}", "model.from_scratch=true"]))
    assert fresh.config.num_hidden_layers == 2 and not hasattr(fresh.config, pooling.CONFIG_FLAG)
    with pytest.raises(ValueError, match="continue pre-training from the model it was fine-tuned from"):
        build_mlm(load_config(None, [f"model.name_or_path={tmp_path}"]))
