"""REST API views (/api/v1/): thin wrappers that validate input with a serializer and call
recognizer.services. Errors are shaped by recognizer.api.errors.exception_handler."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from recognizer.api.errors import PayloadTooLarge
from recognizer.api.filters import DrawingFilter
from recognizer.api.permissions import visible_drawings
from recognizer.api.serializers import (
    DrawingSerializer,
    LabelSerializer,
    ModelVersionSerializer,
    NumberPredictionSerializer,
    PredictionSerializer,
    PredictRequestSerializer,
)
from recognizer.api.throttles import AnonPredictThrottle, LoginThrottle, UserPredictThrottle
from recognizer.models import ModelVersion

ERROR = inline_serializer("Error", {"detail": serializers.CharField(), "code": serializers.CharField()})


class ApiView(APIView):
    # Token first, so an unauthenticated call gets 401 with `WWW-Authenticate: Token`, not a bare 403.
    authentication_classes = [TokenAuthentication, SessionAuthentication]


class PredictView(ApiView):
    """Recognise the digit in a drawing, or with `"mode": "number"` the number (digits split left to right,
    each with its box). Anyone may call it (throttled); a logged-in caller's drawing (each digit) is stored.
    Optional `strokes` (the pen trajectories) are validated, stored with a digit's drawing, and read by a
    serving model that reads strokes (`strokes_used` in the answer); number mode reads the image only."""

    permission_classes = [AllowAny]
    throttle_classes = [AnonPredictThrottle, UserPredictThrottle]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Refuse a huge body before reading it (base64 adds a third, hence the allowance in the setting).
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            limit = settings.RECOGNIZER_MAX_UPLOAD_BYTES
            raise PayloadTooLarge(f"The request body is {length} bytes; images may be at most {limit} bytes.")

    @extend_schema(
        request={"application/json": PredictRequestSerializer, "multipart/form-data": PredictRequestSerializer},
        responses={200: PolymorphicProxySerializer(
                       component_name="PredictAnswer", resource_type_field_name=None,
                       serializers=[PredictionSerializer, NumberPredictionSerializer]),
                   400: ERROR, 413: ERROR, 422: ERROR, 429: ERROR, 503: ERROR},
    )
    def post(self, request):
        serializer = PredictRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = serializer.save(user=request.user)
        if serializer.validated_data["mode"] == "number":
            return Response(NumberPredictionSerializer(result).data)
        return Response(PredictionSerializer(result).data)


class Pages(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100


class DrawingList(ApiView, generics.ListAPIView):
    """Your drawings, newest first (staff: everyone's)."""

    serializer_class = DrawingSerializer
    pagination_class = Pages
    filterset_class = DrawingFilter

    def get_queryset(self):
        return visible_drawings(self.request.user)


class DrawingDetail(ApiView, generics.RetrieveAPIView):
    serializer_class = DrawingSerializer

    def get_queryset(self):
        return visible_drawings(self.request.user)


class LabelDrawing(ApiView, generics.GenericAPIView):
    """Confirm or correct what a drawing is: the owner or staff; anyone else gets 404."""

    serializer_class = LabelSerializer

    def get_queryset(self):
        return visible_drawings(self.request.user)

    @extend_schema(request=LabelSerializer, responses={200: DrawingSerializer, 400: ERROR, 404: ERROR})
    def post(self, request, pk: int):
        serializer = self.get_serializer(self.get_object(), data=request.data)
        serializer.is_valid(raise_exception=True)
        drawing = serializer.save()
        return Response(DrawingSerializer(drawing, context=self.get_serializer_context()).data)


class ModelVersionList(ApiView, generics.ListAPIView):
    """Model versions, newest first, with their metrics."""

    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()
    filterset_fields = ["is_active", "kind", "data_source"]


class ModelVersionDetail(ApiView, generics.RetrieveAPIView):
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


class ActiveModelVersion(ModelVersionDetail):
    """The version that answers predictions; 404 while none is active."""

    def get_object(self):
        version = ModelVersion.objects.filter(is_active=True).first()
        if version is None:
            from rest_framework.exceptions import NotFound

            raise NotFound("No model is active yet.")
        return version


class TokenView(ObtainAuthToken):
    """Exchange a username and password for an API token (`Authorization: Token <key>`)."""

    throttle_classes = [LoginThrottle]

    @extend_schema(
        request=inline_serializer("TokenRequest", {"username": serializers.CharField(),
                                                   "password": serializers.CharField()}),
        responses={200: inline_serializer("Token", {"token": serializers.CharField()}), 400: ERROR, 429: ERROR},
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class FirstRendererNegotiation(BaseContentNegotiation):
    """The image view answers PNG (or a JSON error) whatever the Accept header says."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DrawingImage(ApiView, generics.GenericAPIView):
    """The drawing's PNG, for its owner and staff only (session or token); 404 for everyone else."""

    permission_classes = [AllowAny]  # the queryset decides: anonymous callers see no drawings
    content_negotiation_class = FirstRendererNegotiation

    def get_queryset(self):
        return visible_drawings(self.request.user)

    @extend_schema(responses={(200, "image/png"): OpenApiResponse(description="PNG image"), 404: ERROR})
    def get(self, request, pk: int):
        drawing = self.get_object()
        try:
            handle = drawing.image.open("rb")
        except (FileNotFoundError, ValueError):
            from rest_framework.exceptions import NotFound

            raise NotFound("The image file of this drawing is missing.")
        response = FileResponse(handle, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response
