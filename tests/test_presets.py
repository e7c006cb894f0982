"""Presets: the shipped set, sparse files over neutral defaults, save/load round trips."""
from __future__ import annotations

import pytest
import yaml

from modules.core.errors import PresetError
from modules.core.presets import PresetLibrary
from modules.core.sampling import SamplerParams

SHIPPED = {
    "simple-1": dict(temperature=0.7, top_p=0.9, repetition_penalty=1.15, top_k=20),
    "Divine Intellect": dict(temperature=1.31, top_p=0.14, repetition_penalty=1.17, top_k=49),
    "Big O": dict(temperature=0.87, top_p=0.99, typical_p=0.68, tfs=0.68, repetition_penalty=1.01, top_k=85),
    "Midnight Enigma": dict(temperature=0.98, top_p=0.37, repetition_penalty=1.18, top_k=100),
    "Yara": dict(temperature=0.82, top_p=0.21, repetition_penalty=1.19, top_k=72),
    "Shortwave": dict(temperature=1.53, top_p=0.64, repetition_penalty=1.07, top_k=33),
    "LLaMA-Precise": dict(temperature=0.7, top_p=0.1, repetition_penalty=1.18, top_k=40),
    "Mirostat": dict(mirostat_mode=2, mirostat_tau=8.0),
    "Contrastive Search": dict(do_sample=False, top_k=4, penalty_alpha=0.3),
    "Deterministic": dict(do_sample=False, top_k=1),
    "min_p": dict(min_p=0.05),
    "Creative": dict(min_p=0.02, xtc_probability=0.5),
    "Null preset": {},
}


@pytest.mark.parametrize("name,values", SHIPPED.items())
def test_shipped_presets_load_over_neutral_defaults(repo_root, name, values):
    params = PresetLibrary(repo_root / "presets").load(name)
    assert params.non_neutral() == values
    assert params == SamplerParams().replace(**values)


def test_the_shipped_set_is_complete(repo_root):
    assert set(PresetLibrary(repo_root / "presets").names()) == set(SHIPPED)


def test_save_writes_only_what_differs_and_loads_back(tmp_path):
    library = PresetLibrary(tmp_path)
    params = SamplerParams(temperature=0.3, top_k=7, mirostat_mode=1, stop=["\nUser:"])
    path = library.save("mine", params)
    assert yaml.safe_load(path.read_text()) == {"temperature": 0.3, "top_k": 7, "mirostat_mode": 1}
    assert library.load("mine") == params.replace(stop=[])
    assert "mine" in library.names()
    library.delete("mine")
    assert "mine" not in library.names()


def test_wrong_types_are_refused_with_the_file_and_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("top_k: lots\n")
    with pytest.raises(PresetError) as err:
        PresetLibrary(tmp_path).load("bad")
    assert "bad.yaml" in str(err.value) and "top_k" in str(err.value)
    (tmp_path / "list.yaml").write_text("- temperature\n")
    with pytest.raises(PresetError, match="must map"):
        PresetLibrary(tmp_path).load("list")
