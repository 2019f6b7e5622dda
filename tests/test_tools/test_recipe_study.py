"""tools/recipe_study.py: every variant is a valid change of the built-in pretraining config."""
import pytest
from mmengine.config import Config, DictAction

from tests.conftest import load_tool

recipe_study = load_tool('recipe_study')

CONFIG = 'configs/builtin/densevit-mini_pretrain_builtin.py'


def changed(options):
    cfg = Config.fromfile(CONFIG)
    parsed = {}
    for option in recipe_study.STUDY_BASE + options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed, allow_list_keys=True)
    return cfg


@pytest.mark.parametrize('name', list(recipe_study.VARIANTS))
def test_variant_builds_its_model(name):
    from mmpretrain.registry import MODELS
    cfg = changed(recipe_study.VARIANTS[name][0])
    model = MODELS.build(cfg.model)
    expected_momentum = 0.001 if 'momentum 0.999' in name else 0.01
    assert model.target_encoder.momentum == expected_momentum


def test_index_paths_point_at_the_transforms_they_change():
    view = changed(recipe_study.VARIANTS['grayscale views'][0]) \
        .train_dataloader.dataset.pipeline[1].transforms[0]
    assert view[2].type == 'RandomGrayscale' and view[2].prob == 1.0
    view = changed(recipe_study.VARIANTS['jitter 0.8/0.8/0.8/0.2'][0]) \
        .train_dataloader.dataset.pipeline[1].transforms[0]
    jitter = view[1].transforms[0]
    assert jitter.type == 'ColorJitter'
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == \
        (0.8, 0.8, 0.8, 0.2)


def test_slug_names_the_work_dir():
    assert recipe_study.slug('momentum 0.999 (DenseCL)') == 'momentum_0_999__DenseCL'
