"""Machine-learning core of digitsite (no Django imports: plain Python)."""

from .common import Prediction, TrainingResult, augment_images
from .evaluate import canvas_dataset, evaluate, format_metrics_table
from .kinds import MODEL_KINDS, train_model
from .mnist import (
    MNIST_FILES,
    MNIST_MIRRORS,
    FetchError,
    IdxFormatError,
    MnistData,
    fetch_mnist,
    load_fallback_digits,
    load_idx,
    load_mnist,
    load_training_data,
    verify_mnist,
)
from .model import DigitClassifier
from .pendigits import PenDigit, load_pendigits, render_drawing, render_png, split_writers
from .preprocess import (
    DrawingError,
    EmptyDrawing,
    ImageTooLarge,
    UnreadableImage,
    decode_image,
    deskew,
    from_uint8,
    normalize_thickness,
    preprocess_drawing,
    to_uint8,
)
from .store import CorruptModelError, SavedModel, load_model, read_metadata, save_model
from .svm import SvmDigitClassifier

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MODEL_KINDS",
    "CorruptModelError",
    "DigitClassifier",
    "DrawingError",
    "EmptyDrawing",
    "FetchError",
    "IdxFormatError",
    "ImageTooLarge",
    "MnistData",
    "PenDigit",
    "Prediction",
    "SavedModel",
    "SvmDigitClassifier",
    "TrainingResult",
    "UnreadableImage",
    "augment_images",
    "canvas_dataset",
    "decode_image",
    "deskew",
    "evaluate",
    "fetch_mnist",
    "format_metrics_table",
    "from_uint8",
    "load_fallback_digits",
    "load_idx",
    "load_mnist",
    "load_model",
    "load_pendigits",
    "load_training_data",
    "normalize_thickness",
    "preprocess_drawing",
    "read_metadata",
    "render_drawing",
    "render_png",
    "save_model",
    "split_writers",
    "to_uint8",
    "train_model",
    "verify_mnist",
]
