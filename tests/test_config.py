"""Config loading: schema defaults ← YAML file ← dotted overrides, and errors that name file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from r4t.config import (
    BaselineEvalConfig, DatasetSpec, DiffusionConfig, EmbedConfig, EvalConfig, IndexConfig, PipelineConfig,
    PrepareConfig, RewardConfig, RLConfig, SynthConfig, load_config, to_dict,
)
from r4t.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- defaults


def test_defaults_load() -> None:
    cfg = load_config(PrepareConfig)
    assert isinstance(cfg, PrepareConfig)
    assert cfg == PrepareConfig()
    assert cfg.run_dir == "runs/demo" and cfg.seed == 0
    assert [(d.name, d.format, d.path) for d in cfg.datasets] == [("polyvore", "builtin", None),
                                                                  ("playlists", "builtin", None)]
    assert all(isinstance(d, DatasetSpec) for d in cfg.datasets)
    assert isinstance(cfg.embed, EmbedConfig) and cfg.embed.model == "minilm"
    assert isinstance(cfg.index, IndexConfig) and cfg.index.factory == "Flat" and cfg.index.nprobe == 16
    assert isinstance(cfg.reward, RewardConfig) and cfg.reward.k == 10
    assert isinstance(cfg.eval, BaselineEvalConfig) and cfg.eval.split == "test"


@pytest.mark.parametrize("name, schema", [("data.yaml", PrepareConfig), ("demo.yaml", PipelineConfig),
                                          ("rl.yaml", RLConfig), ("synth.yaml", SynthConfig),
                                          ("diffusion.yaml", DiffusionConfig), ("eval.yaml", EvalConfig)])
def test_job_files_load(name: str, schema: type) -> None:
    cfg = load_config(schema, JOBS / name)
    assert isinstance(cfg, schema)
    assert [d.name for d in cfg.datasets] == ["polyvore", "playlists"]
    assert all(isinstance(d, DatasetSpec) and d.format == "builtin" for d in cfg.datasets)
    assert cfg.index.factory == "Flat"
    assert cfg.index.gpu in ("auto", "on", "off")
    assert cfg.reward.k >= 2
    # A config can be dumped as plain data (manifests, baselines.json).
    d = to_dict(cfg)
    assert d["index"]["factory"] == "Flat"
    assert d["datasets"][0] == {"name": "polyvore", "format": "builtin", "path": None}


def test_yaml_values_override_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "job.yaml", "run_dir: /somewhere\nindex:\n  nprobe: 3\nreward:\n  k: 4\n")
    cfg = load_config(PrepareConfig, path)
    assert cfg.run_dir == "/somewhere"
    assert cfg.index.nprobe == 3 and cfg.index.factory == "Flat"  # untouched keys keep their defaults
    assert cfg.reward.k == 4 and cfg.reward.wscr_m == 5


# ---------------------------------------------------------------------------------------------------- overrides


def test_override_factory_with_comma() -> None:
    cfg = load_config(PrepareConfig, JOBS / "data.yaml", ["index.factory=IVF256,Flat"])
    assert cfg.index.factory == "IVF256,Flat"
    assert cfg.index.nprobe == 16


def test_override_int() -> None:
    cfg = load_config(PrepareConfig, JOBS / "data.yaml", ["reward.k=12"])
    assert cfg.reward.k == 12 and isinstance(cfg.reward.k, int)


def test_override_beats_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "job.yaml", "reward:\n  k: 4\n")
    assert load_config(PrepareConfig, path, ["reward.k=7"]).reward.k == 7


def test_override_dataset_list() -> None:
    cfg = load_config(PrepareConfig, JOBS / "data.yaml", ["datasets=[{name: x, format: r4t, path: /p}]"])
    assert len(cfg.datasets) == 1  # the list is replaced, not extended
    ds = cfg.datasets[0]
    assert isinstance(ds, DatasetSpec)
    assert (ds.name, ds.format, ds.path) == ("x", "r4t", "/p")


def test_several_overrides_apply_in_order() -> None:
    cfg = load_config(PrepareConfig, None, ["index.shards=2", "index.shards=3", "eval.split=val", "seed=7"])
    assert cfg.index.shards == 3 and cfg.eval.split == "val" and cfg.seed == 7


# ---------------------------------------------------------------------------------------------------- errors


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", "index:\n  factroy: Flat\n")
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    msg = str(e.value)
    assert str(path) in msg
    assert "factroy" in msg


def test_unknown_top_level_key_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", "bogus_section: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    assert str(path) in str(e.value) and "bogus_section" in str(e.value)


def test_unknown_key_in_override() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, None, ["index.bogus=1"])
    assert "index.bogus" in str(e.value)
    assert "command line" in str(e.value)


def test_wrong_type_override_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, JOBS / "data.yaml", ["index.nprobe=abc"])
    msg = str(e.value)
    assert "index.nprobe" in msg and "abc" in msg


@pytest.mark.parametrize("override, key, value", [
    ("index.gpu=maybe", "index.gpu", "maybe"),
    ("reward.k=1", "reward.k", "1"),
    ("eval.split=dev", "eval.split", "dev"),
    ("index.nprobe=0", "index.nprobe", "0"),
    ("index.shards=-1", "index.shards", "-1"),
    ("embed.batch_size=0", "embed.batch_size", "0"),
    ("reward.w_div=-0.5", "reward.w_div", "-0.5"),
    ("eval.k=1", "eval.k", "1"),
])
def test_out_of_range_override_named(override: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, None, [override])
    msg = str(e.value)
    assert key in msg and value in msg
    assert "command line" in msg


@pytest.mark.parametrize("yaml, key, value", [
    ("index:\n  nprobe: abc\n", "index.nprobe", "abc"),  # a wrong type
    ("eval:\n  split: dev\n", "eval.split", "dev"),  # out of range
])
def test_bad_value_in_yaml_names_file_key_and_value(tmp_path: Path, yaml: str, key: str, value: str) -> None:
    path = write(tmp_path / "bad.yaml", yaml)
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and value in msg


def test_bad_dataset_specs_named() -> None:
    with pytest.raises(ConfigError, match="needs a path"):
        load_config(PrepareConfig, None, ["datasets=[{name: x, format: r4t}]"])
    with pytest.raises(ConfigError, match="nope"):
        load_config(PrepareConfig, None, ["datasets=[{name: nope, format: builtin}]"])
    with pytest.raises(ConfigError, match="zip"):
        load_config(PrepareConfig, None, ["datasets=[{name: x, format: zip, path: /p}]"])


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, None, ["index.factory"])
    assert "index.factory" in str(e.value) and "key=value" in str(e.value)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    assert str(path) in str(e.value) and "not found" in str(e.value)


def test_invalid_yaml_syntax_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "index: [\n  factory: Flat\n")
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    assert str(path) in str(e.value)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(PrepareConfig, path)
    assert str(path) in str(e.value)


# ---------------------------------------------------------------------------------------------------- index.gpu


@pytest.mark.parametrize("value", ["auto", "on", "off"])
def test_gpu_values_from_command_line(value: str) -> None:
    # The documented values, written as a user would (unquoted). YAML 1.1 reads bare on/off as booleans; the
    # config must still end up with the documented string, not reject it as 'True'/'False'.
    assert load_config(PrepareConfig, None, [f"index.gpu={value}"]).index.gpu == value


@pytest.mark.parametrize("value", ["auto", "on", "off"])
def test_gpu_values_from_yaml(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "gpu.yaml", f"index:\n  gpu: {value}\n")
    assert load_config(PrepareConfig, path).index.gpu == value


def test_gpu_quoted_values() -> None:
    assert load_config(PrepareConfig, None, ["index.gpu='off'"]).index.gpu == "off"


@pytest.mark.parametrize("name, schema", [("synth.yaml", SynthConfig), ("diffusion.yaml", DiffusionConfig),
                                          ("eval.yaml", EvalConfig)])
def test_stage_files_spell_out_the_defaults(name: str, schema: type) -> None:
    """These job files document every setting: each value in them is the schema's default (no silent drift)."""
    loaded = to_dict(load_config(schema, JOBS / name))
    defaults = to_dict(schema())
    defaults["policy"]["bootstrap"] = loaded["policy"]["bootstrap"]  # not spelled out: unused by these stages
    defaults["policy"]["init"] = loaded["policy"]["init"]
    assert loaded == defaults


# What jobs/demo.yaml shrinks to run on 2 cores (27 min from scratch; the target is 20); everything else is the stage's default.
# methods.names: the demo leaves best-of-N LM (N samples per query, each scored) to `r4t eval`.
DEMO_SIZES = {"synth.samples", "synth.prompts_per_call", "train.steps", "train.warmup_steps", "train.checkpoint_every",
              "eval.latency_batches", "eval.pair_latency_batches", "eval.latency_repeats", "methods.names"}


def test_demo_file_differs_from_the_stage_defaults_only_in_its_sizes() -> None:
    from r4t.config import (ActorsConfig, DiffusionTrainSettings, MethodsConfig, ModelSettings, SamplerConfig,
                            SynthSettings, TrainWorkersConfig)

    demo = to_dict(load_config(PipelineConfig, JOBS / "demo.yaml"))
    sections = {"synth": SynthSettings(), "synth_workers": ActorsConfig(), "model": ModelSettings(),
                "train": DiffusionTrainSettings(), "train_workers": TrainWorkersConfig(), "sampler": SamplerConfig(),
                "methods": MethodsConfig(), "eval": EvalConfig().eval}
    for section, default in sections.items():
        for key, value in to_dict(default).items():
            if f"{section}.{key}" not in DEMO_SIZES:
                assert demo[section][key] == value, f"demo.yaml {section}.{key}"


def test_a_job_file_states_only_what_differs_from_its_base(tmp_path: Path) -> None:
    """`base: other.yaml` layers a file over another (relative to it), so a demo file cannot drift from the
    pipeline file it shrinks; a base that comes back to the file is refused by name."""
    write(tmp_path / "full.yaml", "run_dir: /cluster\nindex:\n  nprobe: 64\n  factory: IVF16,Flat\n"
                                  "rl_workers:\n  reward_resources: {scoring: 1}\n  reward: 8\n")
    write(tmp_path / "small.yaml", "base: full.yaml\nindex:\n  nprobe: 2\nrl_workers:\n  reward_resources: {}\n")
    cfg = load_config(PipelineConfig, tmp_path / "small.yaml", ["seed=3"])
    assert (cfg.run_dir, cfg.index.nprobe, cfg.index.factory, cfg.seed) == ("/cluster", 2, "IVF16,Flat", 3)
    assert cfg.rl_workers.reward_resources == {} and cfg.rl_workers.reward == 8  # `{}` empties the base mapping
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="comes back"):
        load_config(PrepareConfig, tmp_path / "a.yaml")
    write(tmp_path / "typo.yaml", "base: full.yaml\nindx:\n  nprobe: 2\n")
    with pytest.raises(ConfigError, match="typo.yaml.*indx"):
        load_config(PipelineConfig, tmp_path / "typo.yaml")


def test_keys_with_a_schema_per_stage_are_the_listed_ones() -> None:
    """A section key holds one schema in every job file, but for the few whose schema is the stage's own; those are
    listed, with each stage's schema, in r4t.config's docstring (a new one must be listed or named apart)."""
    import dataclasses
    import typing

    import r4t.config
    from r4t.config import RLlibConfig

    schemas: dict[str, set[type]] = {}
    for stage in (PrepareConfig, RLConfig, RLlibConfig, SynthConfig, DiffusionConfig, EvalConfig, PipelineConfig):
        hints = typing.get_type_hints(stage)
        for f in dataclasses.fields(stage):
            if dataclasses.is_dataclass(hints[f.name]):
                schemas.setdefault(f.name, set()).add(hints[f.name])
    several = {key: types for key, types in schemas.items() if len(types) > 1}
    assert sorted(several) == ["eval", "rl", "workers"]
    listed = r4t.config.__doc__
    for key, types in several.items():
        assert f"\n    {key} " in listed and all(t.__name__ in listed for t in types), key
