import pytest

from leantune.errors import LeantuneError
from leantune.models.llm import load_model, resolve_model


def test_tiny_model_loads_with_smollm2_tokenizer():
    model, tokenizer = load_model("tiny")
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) == 49_152
    assert tokenizer.pad_token is not None and tokenizer.eos_token is not None
    ids = tokenizer("Anno 2070; Mass Effect", return_tensors="pt")
    out = model(**ids)
    assert out.logits.shape[-1] == len(tokenizer)


def test_unknown_model_is_one_line_error(tmp_path):
    with pytest.raises(LeantuneError, match="not a known model"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(LeantuneError, match="no config.json"):
        resolve_model(str(tmp_path))
