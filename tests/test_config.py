import pytest

from simsiam.config import list_presets, load_config, override_config, validate_config
from simsiam.errors import ConfigError


@pytest.mark.parametrize("name", ["cpu-demo", "fashion-mnist", "cifar10-paper", "imagenet-paper"])
def test_presets_load(name):
    cfg = load_config(name)
    assert cfg.name == name


def test_paper_presets_follow_the_recipe():
    cifar = load_config("cifar10-paper")
    assert (cifar.model.backbone, cifar.model.proj_layers, cifar.optim.base_lr, cifar.optim.weight_decay,
            cifar.train.batch_size, cifar.train.epochs) == ("resnet18_cifar", 2, 0.03, 5e-4, 512, 800)
    inet = load_config("imagenet-paper")
    assert (inet.model.backbone, inet.model.proj_layers, inet.model.dim, inet.model.pred_hidden,
            inet.optim.base_lr, inet.optim.weight_decay, inet.train.epochs) == (
        "resnet50", 3, 2048, 512, 0.05, 1e-4, 100)
    assert set(list_presets()) >= {"cpu-demo", "fashion-mnist", "cifar10-paper", "imagenet-paper"}


def test_dotted_overrides_are_typed():
    cfg = load_config("cpu-demo", ["optim.base_lr=0.05", "loss.stop_grad=false", "model.pred_dim=64"])
    assert cfg.optim.base_lr == 0.05 and cfg.loss.stop_grad is False and cfg.model.pred_dim == 64
    again = override_config(cfg, ["train.epochs=3"])
    assert again.train.epochs == 3 and again.optim.base_lr == 0.05


@pytest.mark.parametrize("override,needle", [
    ("model.backbone=resnet9", "model.backbone='resnet9' is not allowed; allowed values: 'resnet18'"),
    ("model.colour=1", "unknown key 'model.colour'; allowed keys here: backbone"),
    ("optim.base_lr=-0.1", "optim.base_lr"),
    ("train.batch_size=1", "train.batch_size"),
    ("train.epochs=many", "train.epochs"),
    ("loss.similarity=dot", "allowed values: 'cosine' or 'cross_entropy'"),
    ("bogus=1", "unknown key 'bogus'"),
    ("novalue", "must look like key.sub=value"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_config("cpu-demo", [override])
    assert needle in str(exc.value)


def test_unknown_preset_lists_allowed(tmp_path):
    with pytest.raises(ConfigError, match="allowed: .*cpu-demo"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_yaml_file_and_subset_consistency(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\ntrain:\n  batch_size: 64\ndata:\n  train_subset: 32\n")
    with pytest.raises(ConfigError, match="train_subset=32 is smaller than train.batch_size=64"):
        load_config(f)
    f.write_text("name: mine\ntrain:\n  batch_size: 16\n")
    assert load_config(f).train.batch_size == 16


def test_flat_and_hash():
    cfg = load_config("cpu-demo")
    flat = cfg.flat()
    assert flat["optim.base_lr"] == cfg.optim.base_lr and "model.backbone" in flat
    assert cfg.config_hash() == load_config("cpu-demo").config_hash()
    assert cfg.config_hash() != load_config("cpu-demo", ["optim.base_lr=0.01"]).config_hash()


def test_fault_injection_is_not_config():
    with pytest.raises(ConfigError, match="faults"):  # not a key a user can set: tests inject faults from outside
        load_config("cpu-demo", ["faults.fail_at_step=3"])


def test_configs_saved_with_fault_settings_load_without_them_and_hash_the_same():
    cfg = load_config("cpu-demo")
    old = cfg.to_dict()
    old["train"]["fail_at_step"] = 7  # where checkpoints and config.yaml files before 2026-11-28 kept it
    older = {**cfg.to_dict(), "faults": {"fail_at_step": 3, "weights_digest_dir": None}}  # until 2026-12-06
    for saved in (old, older):
        loaded = validate_config(saved)
        assert loaded.to_dict() == cfg.to_dict() and loaded.config_hash() == cfg.config_hash()
