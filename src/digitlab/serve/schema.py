"""The service's answers as pydantic models: what /openapi.json (and so /docs) says each field holds.

Documentation only: the endpoints build their JSON themselves (app._json: FastAPI's encoder is slow
on the 784 ints of "input"), and tests/test_serve.py checks that what they send fits these models.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

BOX = (
    "(x, y, w, h): the box's left edge, top edge, width and height, in pixels of the original image "
    "as it was sent (x to the right and y down from its top-left corner; not the annotated image's "
    "pixels, which may be scaled down)"
)
CONFIDENCE = (
    "the model's probability for its reading, 0-1: softmax(logits / T), T the model's calibration "
    "temperature (/api/models' `temperature`; 1 for a model not calibrated)"
)


class TopDigit(BaseModel):
    digit: str = Field(description="a class: '0'-'9'")
    probability: float = Field(description="its probability, 0-1")


class PredictAnswer(BaseModel):
    """POST /api/predict's answer: one digit."""

    digit: str = Field(description="the digit read: '0'-'9'")
    confidence: float = Field(description=CONFIDENCE)
    top3: list[TopDigit] = Field(description="the three likeliest digits, likeliest first")
    probabilities: list[float] = Field(
        description="the probability of each class, in the order of /api/models' `classes` ('0'-'9'); they sum to 1"
    )
    input: list[list[int]] | None = Field(
        None,
        description="with ?input=true only: the 28x28 image the model saw: 28 rows of 28 levels 0-255, "
        "ink bright, as MNIST (an image sent is cropped, scaled into 20x20 and centred by its centre of mass first)",
    )


class DigitRead(BaseModel):
    text: str = Field(
        description="'0'-'9'; '.', ',' or '-' for punctuation (told by its size and place in the line, "
        "confidence 0); '?' for a digit whose confidence is below `unsure_below`, or a mark that is no digit"
    )
    box: tuple[int, int, int, int] = Field(description="where the digit lies: " + BOX)
    confidence: float = Field(description=CONFIDENCE + "; 0 for a mark that was not classified")
    candidates: list[tuple[str, float]] = Field(
        description="the three likeliest digits as [digit, probability], likeliest first (what a '?' may be)"
    )


class LineRead(BaseModel):
    text: str = Field(description="the line's digits, left to right")
    box: tuple[int, int, int, int] = Field(description="the box around the whole line: " + BOX)
    digits: list[DigitRead]


class ReadAnswer(BaseModel):
    """POST /api/read's answer: the lines of digits in a photo."""

    text: str = Field(description="every line's text, top to bottom, one line each (joined by '\\n')")
    width: int = Field(description="the original image's width in pixels: the boxes' frame")
    height: int = Field(description="the original image's height in pixels")
    lines: list[LineRead] = Field(description="the lines of writing, top to bottom")
    annotated: str | None = Field(
        None,
        description="with `annotate=true` only: the photo with each box and reading drawn on, as a data "
        "URL (data:image/png;base64,... or image/jpeg), scaled to fit its limits",
    )


class ErrorAnswer(BaseModel):
    """Every error, whatever its status."""

    error: str = Field(description="what went wrong, in words a person can act on")
    status: int = Field(description="the HTTP status again")


class PredictRequest(BaseModel):
    """POST /api/predict's JSON body: "image" or "pixels", not both."""

    image: str | None = Field(None, description="a data URL: data:image/png;base64,... (a canvas's toDataURL())")
    pixels: list[list[float]] | None = Field(
        None,
        description="an MNIST-style digit: 28 rows of 28 numbers, ink bright on a dark ground, levels "
        "0-255 (or 0-1 floats); with no ink (all 0, all 255, uniform) it is 422 'no ink found'",
    )
    prepare: bool = Field(
        False, description='with "pixels": prepare them as an image is (crop, 20x20, centre of mass) first'
    )


def predict_request_schema() -> dict:
    """PredictRequest's JSON Schema, to inline in the endpoint's requestBody (it has no nested models)."""
    return PredictRequest.model_json_schema()


class Health(BaseModel):
    status: str = Field(description='"ok" while the service runs')
    version: str = Field(description="digitlab's version")
    worker: int = Field(description="the process id of the worker that answered (`digitlab serve --workers`)")


class ModelInfo(BaseModel):
    name: str | None = Field(description="the recipe the model was trained with")
    path: str | None = Field(description="its run directory or .onnx file; null for the bundled model")
    bundled: bool = Field(description="whether it is digitlab's bundled default model")
    classes: list[str] = Field(description="its classes, in the order of /api/predict's `probabilities`")
    parameters: int | None = Field(description="its number of trained parameters (null where unknown)")
    backend: str = Field(description="what runs it: ONNX Runtime or PyTorch")
    precision: str = Field(description="float32, or int8 for a run's int8 export (the bundled model's)")
    evaluation: dict | None = Field(description="its measured accuracy: dataset, split, n, accuracy (0-1)")
    temperature: float = Field(description="its calibration temperature (1: not calibrated)")
    active: bool = Field(description="whether it answers requests")


class Models(BaseModel):
    models: list[ModelInfo] = Field(description="the model being served")
