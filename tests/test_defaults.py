"""Each default lives in one place: where the schema states a default, it is the library's."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from conftest import ROOT

from amcore import TrainConfig
from amcore.data import preprocess
from amcore.models import integrate

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
MODEL_KEYS = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]
LIBRARY = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def stated_default(description: str):
    """The value after "default" in a description ("default 1000: ...", "(MB of float32, default 2048)")."""
    match = re.search(r"(?:^|[,;(] )default:? ([^\s,:;)]+)", description)
    return None if match is None else yaml.safe_load(match.group(1))


def test_model_keys_are_the_training_config():
    assert set(MODEL_KEYS) <= set(LIBRARY), sorted(set(MODEL_KEYS) - set(LIBRARY))


@pytest.mark.parametrize("key", sorted(k for k, v in MODEL_KEYS.items() if "default" in v or
                                       stated_default(v.get("description", "")) is not None))  # fmt: skip
def test_a_model_default_stated_in_the_schema_is_the_library_default(key):
    spec = MODEL_KEYS[key]
    stated = spec["default"] if "default" in spec else stated_default(spec["description"])
    assert stated == LIBRARY[key], f"models.{key}: the schema says {stated!r}, TrainConfig {LIBRARY[key]!r}"


def test_preprocess_defaults_are_the_library_defaults():
    section = SCHEMA["properties"]["preprocess"]["properties"]
    schema_defaults = {key: spec["default"] for key, spec in section.items() if "default" in spec}
    assert schema_defaults == {key: preprocess.DEFAULTS[key] for key in schema_defaults}
    assert set(schema_defaults) == set(preprocess.DEFAULTS)


def test_evaluate_defaults_are_the_library_defaults():
    from amcore.evaluation.evaluate import DEFAULTS

    section = SCHEMA["properties"]["evaluate"]["properties"]
    assert {key: spec["default"] for key, spec in section.items()} == DEFAULTS


def test_the_integrate_batch_default_is_the_library_default():
    assert SCHEMA["properties"]["integrate"]["properties"]["batch_size"]["default"] == integrate.BATCH_SIZE


def test_the_baselines_ot_cap_default_is_the_library_default():
    from amcore.evaluation.holdout import OT_MAX_SIZE

    assert SCHEMA["properties"]["baseline_ot_max_size"]["default"] == OT_MAX_SIZE


def test_every_text_setting_s_choices_are_the_schema_s():
    """Review: the schema allowed time_clock observed / linear where the library took motion / linear, so a config
    could not name the default; every choice the library checks is the schema's enum, and the reverse."""
    from amcore.training.config import _CHOICES

    for key, choices in _CHOICES.items():
        enum = MODEL_KEYS[key]["enum"]
        assert sorted(map(str, enum)) == sorted(choices), f"models.{key}: schema {enum}, library {list(choices)}"
