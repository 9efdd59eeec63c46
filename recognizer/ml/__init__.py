"""Machine-learning core of digitsite (no Django imports: plain Python)."""

from .evaluate import canvas_dataset, evaluate, format_metrics_table
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
from .model import MODEL_KINDS, DigitClassifier, Prediction, TrainingResult, augment_images, train_model
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
from .svm import SvmDigitClassifier
from .store import CorruptModelError, SavedModel, load_model, read_metadata, save_model

__all__ = [
    "canvas_dataset", "evaluate", "format_metrics_table",
    "MNIST_FILES", "MNIST_MIRRORS", "FetchError", "IdxFormatError", "MnistData", "fetch_mnist",
    "load_fallback_digits", "load_idx", "load_mnist", "load_training_data", "verify_mnist",
    "MODEL_KINDS", "DigitClassifier", "SvmDigitClassifier", "Prediction", "TrainingResult", "augment_images", "train_model",
    "PenDigit", "load_pendigits", "render_drawing", "render_png", "split_writers",
    "DrawingError", "EmptyDrawing", "ImageTooLarge", "UnreadableImage", "decode_image", "deskew",
    "from_uint8", "normalize_thickness", "preprocess_drawing", "to_uint8",
    "CorruptModelError", "SavedModel", "load_model", "read_metadata", "save_model",
]
