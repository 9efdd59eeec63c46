"""REST API views (/api/v1/): thin wrappers that validate input with a serializer and call
recognizer.serving and recognizer.feedback. Errors are shaped by recognizer.api.errors.exception_handler."""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.http import FileResponse
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from recognizer import idempotency, userdata
from recognizer.api.errors import PayloadTooLarge
from recognizer.api.filters import DrawingFilter
from recognizer.api.permissions import visible_drawings
from recognizer.api.serializers import (
    AccountDeleteSerializer,
    DrawingSerializer,
    LabelSerializer,
    ModelVersionSerializer,
    NumberPredictionSerializer,
    PredictionSerializer,
    PredictRequestSerializer,
)
from recognizer.api.throttles import AnonPredictThrottle, ExportThrottle, LoginThrottle, UserPredictThrottle
from recognizer.models import ModelVersion

ERROR = inline_serializer("Error", {"detail": serializers.CharField(), "code": serializers.CharField()})


class ApiView(APIView):
    # Token first, so an unauthenticated call gets 401 with `WWW-Authenticate: Token`, not a bare 403.
    authentication_classes = [TokenAuthentication, SessionAuthentication]


class FirstRendererNegotiation(BaseContentNegotiation):
    """The image and export views answer their file (or a JSON error) whatever the Accept header says."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PredictView(ApiView):
    """Recognise the digit in a drawing, or with `"mode": "number"` the number (digits left to right, each with
    its box and strokes). Anyone may call it (throttled); a logged-in caller's drawing (each digit) is stored.
    Optional `strokes` (the pen trajectories) are validated, stored with a digit's drawing, and read by a
    serving model that reads strokes (`strokes_used` in the answer); in number mode they also say which ink
    belongs to which digit (`segmentation`).
    With an `Idempotency-Key` header, a stored prediction sent twice is stored once (recognizer.idempotency)."""

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
        parameters=[OpenApiParameter(
            idempotency.HEADER, location=OpenApiParameter.HEADER, required=False,
            description="Logged-in callers storing a drawing: a new random key (a UUID) for each drawing attempt. "
                        "Sent again with the same drawing within 24 hours, it returns the first answer and its stored "
                        "drawing (header `Idempotent-Replayed: true`) instead of storing it twice; with a different "
                        "drawing it is a 422 `idempotency_key_reused`. Ignored when nothing is stored.")],
        request={"application/json": PredictRequestSerializer, "multipart/form-data": PredictRequestSerializer},
        responses={200: PolymorphicProxySerializer(
                       component_name="PredictAnswer", resource_type_field_name=None,
                       serializers=[PredictionSerializer, NumberPredictionSerializer]),
                   400: ERROR, 413: ERROR, 422: ERROR, 429: ERROR, 503: ERROR},
    )
    def post(self, request):
        serializer = PredictRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = idempotency.key_from(request.headers)
        if key is None or not (data["store"] and request.user.is_authenticated):
            return Response(self.answer(serializer)[0])  # nothing is stored: nothing to do twice
        fingerprint = idempotency.fingerprint(data["image"], data["mode"], data.get("strokes"))
        body, replayed = idempotency.run_once(request.user, key, fingerprint, lambda: self.answer(serializer))
        return Response(body, headers={"Idempotent-Replayed": "true"} if replayed else None)

    def answer(self, serializer: PredictRequestSerializer) -> tuple[dict, list]:
        """(the JSON answer, the drawings stored with it)."""
        result = serializer.save(user=self.request.user)
        if serializer.validated_data["mode"] == "number":
            drawings = [d.result.drawing for d in result.digits if d.result.drawing is not None]
            return NumberPredictionSerializer(result).data, drawings
        return PredictionSerializer(result).data, [result.drawing] if result.drawing is not None else []


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


class DrawingDetail(ApiView, generics.RetrieveDestroyAPIView):
    """GET: a drawing (yours; staff: anyone's). DELETE: delete your drawing and its image file (204); the
    next retrain no longer trains on it. Only its owner deletes it (staff use the admin): 403 for staff,
    404 for everyone else."""

    serializer_class = DrawingSerializer

    def get_queryset(self):
        return visible_drawings(self.request.user)

    @extend_schema(responses={204: None, 403: ERROR, 404: ERROR})
    def delete(self, request, *args, **kwargs):
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, drawing):
        if drawing.user_id != self.request.user.pk:
            raise PermissionDenied("Only its owner can delete a drawing here; staff delete drawings in the admin.")
        userdata.delete_drawing(drawing)


class DrawingExport(ApiView):
    """Your drawings as a zip: `images/<id>.png`, and `manifest.csv` and `manifest.json` with each drawing's id,
    created_at, predicted digit, confidence, label, status and model version (the JSON adds the probabilities and
    the pen strokes). Your own drawings only, staff included."""

    throttle_classes = [ExportThrottle]
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(responses={(200, "application/zip"): OpenApiResponse(description="zip archive"), 401: ERROR,
                              429: ERROR})
    def get(self, request):
        archive = tempfile.SpooledTemporaryFile(max_size=16 * 2**20)  # noqa: SIM115 - FileResponse closes it
        userdata.export_drawings(request.user, archive)
        archive.seek(0)
        name = f"digitsite-drawings-{request.user.get_username()}-{timezone.localdate():%Y-%m-%d}.zip"
        response = FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")
        response["Cache-Control"] = "private, no-store"
        return response


class AccountView(ApiView):
    """DELETE with your password: delete your account and everything that is yours (drawings and their image
    files, tokens); 204. A wrong password is a 400, and attempts count against the login throttle."""

    throttle_classes = [LoginThrottle]

    @extend_schema(request=AccountDeleteSerializer, responses={204: None, 400: ERROR, 401: ERROR, 429: ERROR})
    def delete(self, request):
        serializer = AccountDeleteSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        userdata.delete_account(request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


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
        except (FileNotFoundError, ValueError) as exc:
            from rest_framework.exceptions import NotFound

            raise NotFound("The image file of this drawing is missing.") from exc
        response = FileResponse(handle, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response
