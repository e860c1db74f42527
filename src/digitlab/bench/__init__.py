"""The benchmark suites behind `digitlab bench SUITE`, one module each, and what they share (common.py).

    seeds   every classic recipe trained in full, over seeds, against its published accuracy
    read    reading real handwriting (USPS, cheques, photos) and synthetic pages, beside Tesseract
    infer   inference speed and agreement: PyTorch eager, torch.compile, ONNX Runtime float and int8
    prepare MNIST-style preparation of an image, per digit, beside the computation before issue 16
    serve   `digitlab serve` under load, and under abuse (`--abuse`)
    speed   training speed, trick by trick and against Keras, a DataLoader loop and scikit-learn
    fuzz    generated damaged files through digitlab's readers (inputs: fuzz_inputs.py, Hypothesis)
    finetune  an MNIST model fine-tuned on N digits of a new writer (USPS), against training from scratch

Each suite writes a JSON file under benchmarks/results/ and its own marked section of
BENCHMARKS.md. Nothing is imported here: the CLI imports a suite only when it runs it, as the
suites import the whole pipeline (and torch) at their top.
"""
