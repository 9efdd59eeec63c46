"""Serializers of the public API: what a prediction request may contain, and how drawings, predictions
and model versions are shown. Decoding and predicting stay in recognizer.services."""

from __future__ import annotations

import base64
import binascii
import re

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recognizer import services
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


class PredictRequestSerializer(serializers.Serializer):
    image = ImageDataField(help_text="PNG/JPEG/WebP: a data URL, a bare base64 string, or a multipart file.")
    store = serializers.BooleanField(
        default=True,
        help_text="Logged-in callers: keep the drawing (default). The page's live previews send false.",
    )
    mode = serializers.ChoiceField(
        choices=["digit", "number"], default="digit",
        help_text="`digit`: the drawing is one digit. `number`: split it into digits, left to right, and read "
                  "each (each digit is stored as its own drawing).",
    )

    def create(self, validated_data) -> "services.PredictionResult | services.NumberResult":
        user = validated_data.get("user")
        predict = services.predict_number if validated_data["mode"] == "number" else services.predict_image
        return predict(validated_data["image"], user, store=validated_data["store"])


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

    def get_drawing(self, result) -> int | None:
        return result.drawing.pk if result.drawing is not None else None


class NumberDigitSerializer(serializers.Serializer):
    digit = serializers.IntegerField(source="result.digit")
    confidence = serializers.FloatField(source="result.confidence")
    probabilities = serializers.ListField(source="result.probabilities", child=serializers.FloatField(),
                                          min_length=10, max_length=10)
    uncertain = serializers.BooleanField(source="result.uncertain")
    top_two = TopGuessSerializer(source="result.top_two", many=True)
    box = serializers.ListField(child=serializers.IntegerField(), min_length=4, max_length=4,
                                help_text="x0, y0, x1, y1 in the image's pixels (x1, y1 exclusive).")
    drawing = serializers.SerializerMethodField(help_text="This digit's stored drawing; null for anonymous callers. "
                                                          "Correct it with /drawings/{id}/label.")

    def get_drawing(self, digit) -> int | None:
        return digit.result.drawing.pk if digit.result.drawing is not None else None


class NumberPredictionSerializer(serializers.Serializer):
    number = serializers.CharField(help_text="The digits read, left to right.")
    digits = NumberDigitSerializer(many=True)
    model_version = serializers.IntegerField()
    uncertain = serializers.BooleanField(help_text="At least one digit is uncertain.")


class DrawingSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    image_url = serializers.SerializerMethodField(help_text="Fetchable only by the owner and staff.")
    is_wrong = serializers.BooleanField(read_only=True, allow_null=True)

    class Meta:
        model = Drawing
        fields = ["id", "user", "image_url", "predicted_digit", "confidence", "probabilities", "model_version",
                  "label", "labelled_at", "is_wrong", "status", "created_at"]
        read_only_fields = fields

    def get_image_url(self, drawing: Drawing) -> str:
        url = reverse("drawing-image", args=[drawing.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class LabelSerializer(serializers.Serializer):
    label = serializers.IntegerField(min_value=0, max_value=9, help_text="The digit it really is (0-9).")

    def update(self, drawing: Drawing, validated_data) -> Drawing:
        return services.label_drawing(drawing, validated_data["label"])


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
