"""Every registered model and recipe, tested the moment it is registered."""

import pytest
import torch

from digitlab.catalog import recipe_model, summary_text
from digitlab.errors import ConfigError, UnknownNameError
from digitlab.models import MODELS, count_parameters, create_model, model_task, tensor_count
from digitlab.recipes import RECIPES, get_recipe

DIGIT_MODELS = sorted(name for name in MODELS if model_task(name) == "digits")
LINE_MODELS = sorted(name for name in MODELS if model_task(name) == "lines")


@pytest.mark.parametrize("name", DIGIT_MODELS)
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_runs_forward_and_backward(name, in_shape):
    torch.manual_seed(0)
    model = create_model(name, in_shape=in_shape, num_classes=10)
    x = torch.rand(4, *in_shape)
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", LINE_MODELS)
@pytest.mark.parametrize("width", [4, 64, 333 // 4 * 4])
def test_every_line_model_gives_a_frame_per_4_columns_and_trains_with_ctc(name, width):
    """A line of any width (a multiple of 4) -> W / 4 frames of 11 scores; CTC's gradient reaches
    every parameter."""
    torch.manual_seed(0)
    model = create_model(name)
    logits = model(torch.rand(3, 1, 32, width))
    assert logits.shape == (3, width // 4, 11) and torch.isfinite(logits).all()
    targets = torch.tensor([1, 2, 3, 4, 5])[: max(1, width // 4 // 2)].repeat(3, 1)
    loss = torch.nn.functional.ctc_loss(
        logits.log_softmax(2).transpose(0, 1),
        targets,
        torch.full((3,), width // 4),
        torch.full((3,), targets.shape[1]),
        blank=10,
        zero_infinity=True,
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(model.state_dict()) == tensor_count({"name": name, "args": {}})


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds(name):
    recipe = get_recipe(name)
    recipe.validate()
    assert count_parameters(recipe_model(recipe)) > 0


# Parameter counts worked out by hand: a dense layer has in*out weights + out biases; a conv
# layer k*k*in*out + out (no bias before batch norm); batch norm 2 per channel.
HAND_COUNTED = {
    "keras-mlp-512": (784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10),  # 401,920 + 262,656 + 5,130
    "keras-mlp-dropout": (784 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10),
    "keras-mlp-sigmoid": (784 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10),
    "keras-cifar10-mlp": (3072 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 10 + 10),
    "keras-cnn": (9 * 1 * 32 + 32) + (9 * 32 * 32 + 32) + (12 * 12 * 32 * 128 + 128) + (128 * 10 + 10),
    "digitnet-pen": (25 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (128 * 4 * 4 * 10 + 10),
    # two convolutions a stage: 5x5 then 3x3 at 32, two 3x3 at 64 and at 128
    "digitnet-real": (25 * 32 + 2 * 32)
    + (9 * 32 * 32 + 2 * 32)
    + (9 * 32 * 64 + 2 * 64)
    + (9 * 64 * 64 + 2 * 64)
    + (9 * 64 * 128 + 2 * 128)
    + (9 * 128 * 128 + 2 * 128)
    + (128 * 4 * 4 * 10 + 10),
    "digitnet": (25 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (128 * 4 * 4 * 10 + 10),
    # four 3x3 convolutions with batch norm; 96 channels x 2 rows -> 128; an LSTM of 64 each way has
    # 4 gates x (64 x (128 + 64) + 2 x 64 biases) per direction; 128 -> 11
    "linenet": (9 * 32 + 2 * 32)
    + (9 * 32 * 48 + 2 * 48)
    + (9 * 48 * 64 + 2 * 64)
    + (9 * 64 * 96 + 2 * 96)
    + (192 * 128 + 128)
    + 2 * 4 * (64 * (128 + 64) + 2 * 64)
    + (128 * 11 + 11),
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_parameter_counts_match_hand_computation(name):
    assert count_parameters(recipe_model(get_recipe(name))) == HAND_COUNTED[name]


def test_keras_mlp_512_summary_shows_the_keras_totals():
    text = summary_text("keras-mlp-512")
    for figure in ("401,920", "262,656", "5,130", "Total params: 669,706"):
        assert figure in text
    assert "(None, 512)" in text


def test_keras_initialisation_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = create_model("mlp", hidden=(512, 256))
    first = model[1]
    bound = (6 / (784 + 512)) ** 0.5
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.95 * bound  # uniform up to the bound, not a narrower init
    assert torch.count_nonzero(first.bias) == 0


def test_unknown_model_and_bad_arguments_are_clear_errors():
    with pytest.raises(UnknownNameError, match="known models"):
        create_model("resnet-9000")
    with pytest.raises(ConfigError, match="cannot be built"):
        create_model("mlp", depth=3)
    for depth in (0, 5, 1.5):
        with pytest.raises(ConfigError, match="depth is 1 to 4 convolutions per stage"):
            create_model("digitnet", depth=depth)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_digitnet_depth_adds_convolutions_before_each_pooling_one(depth):
    """depth d: d convolutions a stage, each followed by batch norm, the last by the pooling; the
    tensor count the registry gives before building (model_files checks configs with it) agrees."""
    model = create_model("digitnet", depth=depth)
    kinds = [type(m).__name__ for m in model]
    assert kinds.count("Conv2d") == 3 * depth and kinds.count("BatchNorm2d") == 3 * depth
    assert kinds.count("MaxPool2d") == 3 and all(
        kinds[i - 1] == "Conv2d" for i, k in enumerate(kinds) if k == "MaxPool2d"
    )
    assert len(model.state_dict()) == tensor_count({"name": "digitnet", "args": {"depth": depth}})
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_recipe_overrides_are_validated():
    recipe = get_recipe("keras-cnn")
    assert recipe.override(epochs=2, lr=None).epochs == 2
    assert recipe.override(epochs=2).lr == recipe.lr  # None leaves a field alone
    with pytest.raises(ConfigError):
        recipe.override(epochs=0)
    with pytest.raises(ConfigError):
        recipe.override(batch_size=-1)
    with pytest.raises(ConfigError):
        recipe.override(colour="red")


def test_set_parses_recipe_fields_by_type():
    recipe = get_recipe("keras-cnn").with_settings(
        ["schedule=onecycle", "label_smoothing=0.1", "channels_last=true", "augment=2,10,0.1", "step-epochs=3"]
    )
    assert recipe.schedule == "onecycle" and recipe.label_smoothing == 0.1 and recipe.channels_last is True
    assert recipe.augment.shift == 2 and recipe.augment.rotate == 10 and recipe.augment.scale == 0.1
    assert recipe.step_epochs == 3
    for bad in [
        "schedule",
        "colour=red",
        "epochs=many",
        "channels_last=maybe",
        "schedule=cosine",
        "model_args=x",
        "label_smoothing=1.5",
    ]:
        with pytest.raises(ConfigError):
            get_recipe("keras-cnn").with_settings([bad])
