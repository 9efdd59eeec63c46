"""Serializers of the public API: what a prediction request may contain, and how drawings, predictions
and model versions are shown. Decoding and predicting stay in recognizer.serving, labelling in recognizer.feedback."""

from __future__ import annotations

import base64
import binascii
import json
import re

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recognizer import feedback, serving
from recognizer.ml import strokes as ml_strokes
from recognizer.ml.preprocess import ImageTooLarge
from recognizer.models import Drawing, ModelVersion

DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


def too_many_bytes(size: int) -> ImageTooLarge:
    limit = settings.RECOGNIZER_MAX_UPLOAD_BYTES
    return ImageTooLarge(f"it is {size} bytes, and the limit is {limit} bytes ({limit / 2**20:.1f} MB)")


@extend_schema_field(OpenApiTypes.STR)
class ImageDataField(serializers.Field):
    """An image as a data URL, a bare base64 string, or an uploaded file; becomes the raw bytes."""

    default_error_messages = {
        "invalid": "Send the image as a data URL (data:image/png;base64,...), a base64 string, or a file.",
        "base64": "The image is not valid base64.",
        "not_image": "The data URL is not an image (it says {type}).",
    }

    def to_internal_value(self, data) -> bytes:
        limit = settings.RECOGNIZER_MAX_UPLOAD_BYTES
        if isinstance(data, UploadedFile):
            if data.size is not None and data.size > limit:
                raise too_many_bytes(data.size)
            return data.read()
        if not isinstance(data, str) or not data.strip():
            self.fail("invalid")
        text = data.strip()
        match = DATA_URL.match(text)
        if match:
            if match["type"] and not match["type"].lower().startswith("image/"):
                self.fail("not_image", type=match["type"])
            text = text[match.end():]
        elif text.startswith("data:"):
            self.fail("invalid")
        # Refuse before decoding: base64 is 4 characters for every 3 bytes.
        if len(text) * 3 // 4 > limit + 3:
            raise too_many_bytes(len(text) * 3 // 4)
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
        except (binascii.Error, ValueError):
            self.fail("base64")
        if len(raw) > limit:
            raise too_many_bytes(len(raw))
        return raw

    def to_representation(self, value):
        return None


STROKES_SCHEMA = {
    "type": "array",
    "nullable": True,
    "minItems": 1,
    "maxItems": ml_strokes.MAX_STROKES,
    "items": {
        "type": "array",
        "description": "One stroke (pen down to pen up): its points in order.",
        "items": {
            "type": "array", "minItems": 2, "maxItems": 3,
            "description": "[x, y, t]: the image's pixels (y down) and ms since the drawing started; t is optional.",
            "items": {"type": "number"},
        },
    },
}


@extend_schema_field(STROKES_SCHEMA)
class StrokesField(serializers.Field):
    """The pen strokes drawn with the image, `[[[x, y, t], ...], ...]`: a JSON array in a JSON body, or the
    same array as a JSON string in a form field (multipart). Validated by recognizer.ml.strokes.parse_strokes,
    whose InvalidStrokes the API answers as 400 `invalid_strokes`; becomes a list of (n, 3) arrays."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("allow_null", True)
        if not kwargs.get("read_only"):
            kwargs.setdefault("required", False)
            kwargs.setdefault("default", None)
        super().__init__(**kwargs)

    def validate_empty_values(self, data):
        if isinstance(data, str) and not data.strip():
            data = None  # an empty form field: no strokes
        return super().validate_empty_values(data)

    def to_internal_value(self, data) -> list:
        if isinstance(data, str):
            try:
                data = json.loads(data)  # NaN and Infinity parse, and parse_strokes refuses them by name
            except (ValueError, RecursionError):
                raise ml_strokes.InvalidStrokes("strokes is not valid JSON: send [[[x, y, t], ...], ...]") from None
        return ml_strokes.parse_strokes(data)

    def to_representation(self, value):
        if value is None:
            return None
        return [[[float(v) for v in point] for point in stroke] for stroke in value]  # arrays or stored JSON


class PredictRequestSerializer(serializers.Serializer):
    image = ImageDataField(help_text="PNG/JPEG/WebP: a data URL, a bare base64 string, or a multipart file.")
    store = serializers.BooleanField(
        default=True,
        help_text="Logged-in callers: keep the drawing (default). The page's live previews send false.",
    )
    mode = serializers.ChoiceField(
        choices=["digit", "number"], default="digit",
        help_text="`digit`: the drawing is one digit. `number`: a whole number, read digit by digit, left to right; "
                  "with `strokes` the digits are grouped by the pen (a bar drawn late, touching or overlapping digits, "
                  "a stroke joining two digits), without them split from the ink. Each digit is read as a single "
                  "drawing is, with its own strokes, and stored as its own drawing.",
    )
    strokes = StrokesField(
        help_text="Optional: the pen strokes of the drawing, `[[[x, y, t], ...], ...]`, one list of points per "
                  "stroke, x and y in the image's pixels (y down), t in milliseconds since the drawing started. "
                  "Validated (at most 64 strokes and 5,000 points, finite numbers; 400 `invalid_strokes` "
                  "otherwise) and stored with the drawing; a model that reads strokes uses them (see "
                  "`strokes_used` in the answer). In a multipart form, send the same array as a JSON string. "
                  "In `number` mode they say where each digit is; strokes that do not trace the image's ink "
                  "(another drawing's) are ignored and the image is split alone (`segmentation.method`).",
    )

    def create(self, validated_data) -> serving.PredictionResult | serving.NumberResult:
        user = validated_data.get("user")
        if validated_data["mode"] == "number":
            return serving.predict_number(validated_data["image"], user, store=validated_data["store"],
                                          strokes=validated_data.get("strokes"))
        return serving.predict_image(validated_data["image"], user, store=validated_data["store"],
                                      strokes=validated_data.get("strokes"))


def label_url(drawing: Drawing | None) -> str | None:
    """Where a stored drawing is labelled, so that no client builds the URL itself. A path, not an absolute URL:
    an Idempotency-Key retry replays the stored answer, whatever host the retry comes through."""
    return reverse("api-drawing-label", args=[drawing.pk]) if drawing is not None else None


class TopGuessSerializer(serializers.Serializer):
    digit = serializers.IntegerField()
    probability = serializers.FloatField()


class PredictionSerializer(serializers.Serializer):
    digit = serializers.IntegerField()
    confidence = serializers.FloatField()
    probabilities = serializers.ListField(child=serializers.FloatField(), min_length=10, max_length=10)
    model_version = serializers.IntegerField()
    uncertain = serializers.BooleanField(help_text="Weak confidence, or the two best digits close together.")
    top_two = TopGuessSerializer(many=True)
    drawing = serializers.SerializerMethodField(help_text="The stored drawing's id; null for anonymous callers.")
    strokes_used = serializers.BooleanField(
        help_text="The serving model read the strokes sent with the image, not only the image. False without "
                  "strokes, and always false for a model that reads images only.")
    label_url = serializers.SerializerMethodField(
        help_text="Where to POST the right digit (`{\"label\": 7}`) for the stored drawing; null when nothing was "
                  "stored.")

    def get_drawing(self, result) -> int | None:
        return result.drawing.pk if result.drawing is not None else None

    def get_label_url(self, result) -> str | None:
        return label_url(result.drawing)


class NumberDigitSerializer(serializers.Serializer):
    digit = serializers.IntegerField(source="result.digit")
    confidence = serializers.FloatField(source="result.confidence")
    probabilities = serializers.ListField(source="result.probabilities", child=serializers.FloatField(),
                                          min_length=10, max_length=10)
    uncertain = serializers.BooleanField(source="result.uncertain")
    top_two = TopGuessSerializer(source="result.top_two", many=True)
    box = serializers.ListField(child=serializers.IntegerField(), min_length=4, max_length=4,
                                help_text="x0, y0, x1, y1 in the image's pixels (x1, y1 exclusive).")
    strokes = StrokesField(read_only=True, help_text="This digit's pen strokes in the image's pixels, in the order "
                                                     "drawn (a stroke joining two digits is cut between them); null "
                                                     "when the number was split from the image alone.")
    strokes_used = serializers.BooleanField(source="result.strokes_used",
                                            help_text="The model read this digit's strokes, not only its image.")
    drawing = serializers.SerializerMethodField(help_text="This digit's stored drawing; null for anonymous callers. "
                                                          "Correct it at `label_url`.")
    label_url = serializers.SerializerMethodField(help_text="Where to POST this digit's right label; null when "
                                                            "nothing was stored.")

    def get_drawing(self, digit) -> int | None:
        return digit.result.drawing.pk if digit.result.drawing is not None else None

    def get_label_url(self, digit) -> str | None:
        return label_url(digit.result.drawing)


class SegmentationSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["strokes", "image"], source="segmentation",
                                     help_text="`strokes`: the digits were grouped from the pen strokes; `image`: "
                                               "split from the ink alone (no strokes sent, or they did not trace it).")
    uncertain = serializers.BooleanField(source="segmentation_uncertain",
                                         help_text="Another split into digits read almost as well.")


class NumberPredictionSerializer(serializers.Serializer):
    number = serializers.CharField(help_text="The digits read, left to right.")
    digits = NumberDigitSerializer(many=True)
    model_version = serializers.IntegerField()
    uncertain = serializers.BooleanField(help_text="At least one digit, or the split into digits, is uncertain.")
    segmentation = SegmentationSerializer(source="*")
    alternative = serializers.CharField(allow_null=True, help_text="The second-best reading of the whole number "
                                                                   "(another digit somewhere, or another split); "
                                                                   "null when there is none.")


class DrawingSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    image_url = serializers.SerializerMethodField(help_text="Fetchable only by the owner and staff.")
    is_wrong = serializers.BooleanField(read_only=True, allow_null=True)
    strokes = StrokesField(read_only=True, help_text="The pen strokes sent with the drawing, as validated "
                                                     "(`[[[x, y, t], ...], ...]`); null when only the image came.")
    has_strokes = serializers.SerializerMethodField()

    class Meta:
        model = Drawing
        fields = ["id", "user", "image_url", "predicted_digit", "confidence", "probabilities", "model_version",
                  "label", "labelled_at", "is_wrong", "status", "created_at", "strokes", "has_strokes"]
        read_only_fields = fields

    def get_image_url(self, drawing: Drawing) -> str:
        url = reverse("drawing-image", args=[drawing.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def get_has_strokes(self, drawing: Drawing) -> bool:
        return bool(drawing.strokes)


class LabelSerializer(serializers.Serializer):
    label = serializers.IntegerField(min_value=0, max_value=9, help_text="The digit it really is (0-9).")

    def update(self, drawing: Drawing, validated_data) -> Drawing:
        return feedback.label_drawing(drawing, validated_data["label"])


class AccountDeleteSerializer(serializers.Serializer):
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"},
                                     help_text="Your password, to confirm that the account goes.")

    def validate_password(self, password: str) -> str:
        if not self.context["request"].user.check_password(password):
            raise serializers.ValidationError("The password is not right: the account is kept.")
        return password


class ModelVersionSerializer(serializers.ModelSerializer):
    hyperparameters = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["id", "kind", "data_source", "is_active", "created_at", "activated_at", "metrics",
                  "hyperparameters", "counts"]
        read_only_fields = fields

    def get_hyperparameters(self, version: ModelVersion) -> dict:
        return version.metadata.get("hyperparameters", {}) if isinstance(version.metadata, dict) else {}

    def get_counts(self, version: ModelVersion) -> dict:
        return version.metadata.get("counts", {}) if isinstance(version.metadata, dict) else {}
