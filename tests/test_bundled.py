"""The bundled default model, and `predict` / `read` with it, on real data and generated pages."""

import json

import cv2
import numpy as np
import pytest

import digitlab
from digitlab.cli import main
from digitlab.data.synth import make_page
from digitlab.evaluate import compute_metrics, predict_logits
from digitlab.read.annotation import drawing_scale


@pytest.fixture(scope="module")
def bundled():
    return digitlab.load_model()


def test_bundled_model_loads_offline_and_reaches_99_5_percent_on_mnist(bundled, mnist):
    assert bundled.config["recipe"]["name"] == "digitnet-real"
    assert 0.05 < bundled.temperature < 1.0  # calibrated: label smoothing leaves logits too flat
    metrics = compute_metrics(predict_logits(bundled.module, mnist.test_images), mnist.test_labels, mnist.classes)
    assert metrics.accuracy >= 0.995


def test_bundled_model_reads_a_generated_page(bundled, mnist):
    images, labels = mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy()
    page, truth = make_page(
        np.random.default_rng(3), (images, labels), n_lines=2, n_digits=5, touching=False, ruled=False
    )
    reading = digitlab.read(page, bundled)
    assert [line.text for line in reading.lines] == truth.lines


def write_digit(path, mnist, index, dark_on_light=True):
    digit = mnist.test_images[index, 0].numpy()
    big = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), 255 - big if dark_on_light else big)
    return str(mnist.test_labels[index].item())


def test_predict_command_on_real_digits(capsys, tmp_path, mnist):
    truth = [write_digit(tmp_path / f"digit{i}.png", mnist, i, dark_on_light=i % 2 == 0) for i in range(6)]
    code = main(
        [
            "predict",
            *[str(tmp_path / f"digit{i}.png") for i in range(6)],
            "--json",
            "--show-input",
            str(tmp_path / "seen"),
        ]
    )
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["digit"] for row in rows] == truth
    assert all(len(row["top3"]) == 3 and abs(sum(row["probabilities"]) - 1) < 1e-4 for row in rows)
    seen = cv2.imread(rows[0]["model_input"], cv2.IMREAD_GRAYSCALE)
    assert seen.shape == (28, 28) and seen.max() > 200  # ink bright, as the model saw it


def test_read_command_writes_json_and_annotation(capsys, tmp_path, mnist):
    images, labels = mnist.test_images[:, 0].numpy(), mnist.test_labels.numpy()
    page, truth = make_page(
        np.random.default_rng(11), (images, labels), n_lines=1, n_digits=6, touching=False, ruled=True
    )
    cv2.imwrite(str(tmp_path / "page.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))
    code = main(["read", str(tmp_path / "page.png"), "--json", "--annotate", str(tmp_path / "seen.png")])
    (result,) = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["text"] == truth.text
    seen = cv2.imread(str(tmp_path / "seen.png"))
    k = round(drawing_scale(page.shape[1], page.shape[0]))  # a 287x75 strip: drawn 4x, a margin above for labels
    top = seen.shape[0] - k * page.shape[0]
    assert k == 4 and seen.shape[1] == k * page.shape[1] and top > 0
    seen = seen[top:][::k, ::k]  # the page itself again, each pixel enlarged to a k x k square
    # Drawn on the colour page, not its grey version: away from the boxes the pixels are the page's.
    corner = cv2.cvtColor(page, cv2.COLOR_RGB2BGR)[:8, :8].astype(int)
    assert np.abs(seen[:8, :8].astype(int) - corner).max() <= 1


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.png", b""),
        ("truncated.png", None),
        ("text.png", b"this is not an image\n"),
        ("tiny.png", "1x1"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "read"])
def test_bad_images_exit_2_with_a_clear_message_and_write_nothing(capsys, tmp_path, mnist, name, content, command):
    path = tmp_path / name
    if content is None:
        write_digit(tmp_path / "whole.png", mnist, 0)
        path.write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    elif content == "1x1":
        cv2.imwrite(str(path), np.zeros((1, 1), np.uint8))
    else:
        path.write_bytes(content)
    extra = ["--annotate", str(tmp_path / "out.png")] if command == "read" else ["--show-input", str(tmp_path / "s")]
    code = main([command, str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("digitlab: error:") and name in err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "s").exists()
