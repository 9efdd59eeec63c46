"""Staff endpoints of the feedback loop: start a retrain, list training runs, activate a version."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from recognizer import retraining, versions
from recognizer.ml.store import CorruptModelError
from recognizer.models import ModelVersion, TrainingRun


class VersionUnusable(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This model version cannot be activated."
    default_code = "model_unusable"


class StaffView:
    # As the rest of the API: token first, so a missing token is a 401 with `WWW-Authenticate: Token`.
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]


class TrainingRunSerializer(serializers.ModelSerializer):
    started_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    duration_seconds = serializers.FloatField(read_only=True)
    stale = serializers.SerializerMethodField(
        help_text="Queued or running, but its heartbeat is older than RECOGNIZER_RETRAIN_LOCK_TIMEOUT: its worker "
                  "is gone, and beat's reaper marks it failed within a minute.")

    class Meta:
        model = TrainingRun
        fields = ["id", "trigger", "started_by", "status", "task_id", "progress", "stage", "data_counts", "metrics",
                  "decision", "model_version", "error", "created_at", "started_at", "finished_at", "heartbeat_at",
                  "duration_seconds", "stale"]
        read_only_fields = fields

    def get_stale(self, run: TrainingRun) -> bool:
        # Read only: a GET never writes; the reaper (beat, every minute) does.
        limit = timezone.now() - timedelta(seconds=settings.RECOGNIZER_RETRAIN_LOCK_TIMEOUT)
        return run.holds_lock and (run.heartbeat_at or run.created_at) < limit


ERROR = inline_serializer("TrainingError", {"detail": serializers.CharField(), "code": serializers.CharField()})
RETRAIN = inline_serializer("RetrainAccepted", {
    "task_id": serializers.CharField(), "training_run": serializers.IntegerField(),
    "status": serializers.CharField(), "created": serializers.BooleanField(),
    "detail": serializers.CharField(required=False),
})
ACTIVATED = inline_serializer("ActivatedVersion", {
    "id": serializers.IntegerField(), "is_active": serializers.BooleanField(),
    "activated_at": serializers.DateTimeField(), "metrics": serializers.DictField(),
})


class TrainingQueueDown(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "training_unavailable"


class RetrainView(StaffView, APIView):
    """POST: start a retrain (202 with its task id), or get the id of the one already running."""

    @extend_schema(request=None, responses={202: RETRAIN, 401: ERROR, 403: ERROR, 503: ERROR})
    def post(self, request):
        try:
            run, created = retraining.start_retrain(TrainingRun.Trigger.STAFF, request.user)
        except retraining.TrainingUnavailable as exc:
            raise TrainingQueueDown(str(exc)) from exc
        body = {"task_id": run.task_id, "training_run": run.pk, "status": run.status, "created": created}
        if not created:
            body["detail"] = "A retrain is already running; this is its id."
        return Response(body, status=status.HTTP_202_ACCEPTED)


class TrainingRunList(StaffView, generics.ListAPIView):
    serializer_class = TrainingRunSerializer
    queryset = TrainingRun.objects.select_related("started_by")
    filterset_fields = ["status", "trigger"]


class TrainingRunDetail(StaffView, generics.RetrieveAPIView):
    serializer_class = TrainingRunSerializer
    queryset = TrainingRun.objects.select_related("started_by")


class ActivateVersionView(StaffView, APIView):
    """POST: make any stored version the active one (rollback); its file is verified first."""

    @extend_schema(request=None, responses={200: ACTIVATED, 404: ERROR, 409: ERROR})
    def post(self, request, pk: int):
        version = get_object_or_404(ModelVersion, pk=pk)
        try:
            versions.activate(version, by=request.user)
        except (CorruptModelError, OSError) as exc:
            raise VersionUnusable(f"Model v{pk} cannot be activated: {exc}") from exc
        return Response({"id": version.pk, "is_active": version.is_active, "activated_at": version.activated_at,
                         "metrics": version.metrics})
