"""The line recognizer's parts: lines written on the fly, the line input, CTC decoding on known
sequences, and a short real training run on generated lines."""

import importlib
import itertools
import math

import numpy as np
import pytest
import torch

import digitlab
from digitlab.data.lines import (
    BLANK,
    DigitPool,
    line_batch,
    lines_as_inputs,
    punctuation_pool,
    synth_lines,
)
from digitlab.evaluate import line_texts, string_metrics
from digitlab.models.ctc import align, beam_decode, greedy_decode, log_probability
from digitlab.preprocess import LINE_HEIGHT, ImageError, line_ink, line_input

train_module = importlib.import_module("digitlab.train")  # the module (digitlab.train is the API's function)


@pytest.fixture(scope="module")
def pool(mnist):
    return DigitPool.of(mnist.train_images[:5000], mnist.train_labels[:5000])


def written(pool, seed: int, lengths: list[int], glyphs=None):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    picks = torch.randint(0, len(pool.labels), (int(lengths.sum()),), generator=generator)
    return picks, synth_lines(pool, picks, lengths, generator, glyphs=glyphs, height=40)


# --- lines written on the fly -------------------------------------------------------------------


def test_a_written_line_holds_the_digits_picked_in_order_and_punctuation_is_not_a_target(pool):
    picks, lines = written(pool, 0, [3, 1, 10, 6], glyphs=punctuation_pool())
    expected = "".join(str(int(d)) for d in pool.labels[picks])
    assert "".join(lines.texts) == expected
    assert [len(t) for t in lines.texts] == [3, 1, 10, 6]
    for grey, boxes in zip(lines.grey, lines.boxes, strict=True):
        assert grey.dtype == np.float32 and grey.shape[0] == 40 and 0 <= grey.min() and grey.max() <= 1
        # dark ink on light paper: the paper (the median) is lighter than the darkest ink
        assert np.median(grey) - grey.min() > 0.2
        for x, _, w, h in boxes:  # each digit's ink box lies inside its crop
            assert -2 <= x and x + w <= grey.shape[1] + 2 and w > 0 and h > 0


def test_the_same_seed_writes_the_same_lines_and_another_seed_others(pool):
    _, first = written(pool, 3, [4, 7])
    _, again = written(pool, 3, [4, 7])
    _, other = written(pool, 4, [4, 7])
    assert all(np.array_equal(a, b) for a, b in zip(first.grey, again.grey, strict=True))
    assert first.texts == again.texts and first.texts != other.texts


def test_line_inputs_are_32_high_keep_their_aspect_and_pad_to_a_multiple_of_4():
    ink = np.zeros((64, 250), np.float32)
    ink[10:50, 20:230] = 1.0
    x = line_input(ink)
    assert x.shape == (LINE_HEIGHT, 128) and x.dtype == np.float32  # 250 * 32 / 64 = 125 -> 128
    assert np.allclose(x[:, 125:], 0) and x.max() == 1.0
    with pytest.raises(ImageError):
        line_input(np.zeros((0, 10), np.float32))
    with pytest.raises(ImageError, match="no ink"):
        line_ink(np.full((30, 90), 0.8, np.float32))


def test_a_batch_pads_its_lines_and_concatenates_their_targets(pool):
    _, lines = written(pool, 5, [2, 5, 1])
    inputs, texts = lines_as_inputs(lines.grey, lines.texts)
    batch = line_batch(inputs, texts)
    assert batch.images.shape == (3, 1, LINE_HEIGHT, max(a.shape[1] for a in inputs))
    assert batch.widths.tolist() == [a.shape[1] for a in inputs]
    assert batch.target_lengths.tolist() == [2, 5, 1]
    assert "".join(str(d) for d in batch.targets.tolist()) == "".join(texts)


# --- CTC decoding, against hand-made frames and independent references ----------------------------


def frames(path: list[int], sure: float = 0.9, classes: int = 11) -> np.ndarray:
    """Probabilities that put `sure` on the class of `path` at each frame."""
    probs = np.full((len(path), classes), (1 - sure) / (classes - 1))
    probs[np.arange(len(path)), path] = sure
    return probs


def test_greedy_decoding_merges_repeats_drops_blanks_and_keeps_a_doubled_digit_split_by_a_blank():
    b = BLANK
    chars = greedy_decode(frames([b, 4, 4, b, 0, b, 0, 0, b, 7]))
    assert [c.label for c in chars] == [4, 0, 0, 7]
    assert [(c.first, c.last) for c in chars] == [(1, 2), (4, 4), (6, 7), (9, 9)]
    assert all(math.isclose(c.confidence, 0.9) for c in chars)
    assert greedy_decode(frames([b, b, b])) == []


def test_beam_search_finds_the_string_whose_paths_sum_highest_where_the_best_path_misleads():
    """Brute force over every path of 6 frames (4 classes, blank last) against the beam search."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        logits = rng.normal(0, 1.5, (6, 4))
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        totals: dict[tuple, float] = {}
        for path in itertools.product(range(4), repeat=6):
            text = tuple(c for k, c in enumerate(path) if c != 3 and (k == 0 or path[k - 1] != c))
            totals[text] = totals.get(text, 0.0) + float(np.prod(probs[np.arange(6), path]))
        best = max(totals, key=totals.get)
        labels, log_p = beam_decode(probs, width=64)
        assert tuple(labels) == best
        # the beam drops the least likely prefixes on the way: the sum it keeps is a lower bound
        assert math.log(totals[best]) - 0.02 < log_p <= math.log(totals[best]) + 1e-9
        assert math.isclose(log_probability(probs, list(best)), math.log(totals[best]), rel_tol=1e-9)


def test_the_log_probability_of_a_string_is_torch_ctc_loss_negated():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (30, 11))
    log_probs = torch.from_numpy(logits).log_softmax(1)
    for labels in ([3], [1, 1], [9, 0, 9, 0, 5], [2] * 12):
        reference = -torch.nn.functional.ctc_loss(
            log_probs[:, None], torch.tensor([labels]), torch.tensor([30]), torch.tensor([len(labels)]), blank=10
        ).item() * len(labels)  # torch's mean reduction divides by the target length
        assert math.isclose(log_probability(log_probs.exp().numpy(), labels), reference, rel_tol=1e-6)


def test_alignment_puts_each_character_on_its_own_frames():
    b = BLANK
    probs = frames([b, 5, 5, b, b, 2, b, b, 2, b, 8, 8, 8, b])
    chars = align(probs, [5, 2, 2, 8])
    assert [(c.label, c.first, c.last) for c in chars] == [(5, 1, 2), (2, 5, 5), (2, 8, 8), (8, 10, 12)]
    assert align(probs, []) == []


# --- a short real training run --------------------------------------------------------------------


def test_a_short_training_run_reads_generated_lines_far_better_than_chance(tmp_path, shared_data_dir, mnist):
    """About 600 steps of linenet on MNIST lines (CTC first learns to say blank everywhere; a few
    hundred steps pass before it reads): it reads most digits of lines written with MNIST test
    digits, which it never saw, where an untrained model reads none."""
    run = digitlab.train(
        "linenet",
        epochs=2,
        val_split=0.1,
        batch_size=32,
        settings=["mix=mnist:1"],
        out=tmp_path,
        data_dir=shared_data_dir,
        progress=False,
        evaluate_after=False,
    )
    history = run.history
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]
    test_pool = DigitPool.of(mnist.test_images, mnist.test_labels)
    _, lines = written(test_pool, 11, [int(n) for n in np.random.default_rng(0).integers(1, 9, 200)])
    inputs, truths = lines_as_inputs(lines.grey, lines.texts)
    texts, _ = line_texts(run.model, list(zip(inputs, truths, strict=True)))
    figures = string_metrics(list(zip(truths, texts, strict=True)))
    untrained, _ = line_texts(digitlab.models.create_model("linenet"), list(zip(inputs, truths, strict=True)))
    assert string_metrics(list(zip(truths, untrained, strict=True)))["digit_accuracy"] < 0.1
    assert figures["digit_accuracy"] > 0.6, figures


def test_a_line_run_interrupted_after_an_epoch_resumes_to_the_uninterrupted_history(
    tmp_path, shared_data_dir, monkeypatch
):
    """The line recipe's checkpoint restores the generators that write its lines: a run stopped
    right after its first epoch's checkpoint and resumed ends as one trained straight through."""
    common = dict(
        epochs=2,
        subset=2000,
        val_split=0.1,
        batch_size=16,
        settings=["mix=mnist:1"],
        data_dir=shared_data_dir,
        progress=False,
        evaluate_after=False,
    )
    straight = digitlab.train("linenet", out=tmp_path / "a", **common)
    real_save = train_module.save_checkpoint

    def crash(run_dir, epoch, *args, **kwargs):
        path = real_save(run_dir, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        digitlab.train("linenet", out=tmp_path / "b", **common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    (broken,) = (tmp_path / "b").iterdir()
    resumed = digitlab.train(None, resume=broken, data_dir=shared_data_dir, progress=False, evaluate_after=False)
    assert len(resumed.history) == 2
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["val_accuracy"] == b["val_accuracy"]
    for (name, x), (_, y) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-5), name
