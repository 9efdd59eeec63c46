"""Database models: users, the drawings they make, the model versions that read them, and the
training runs that make new versions."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q


class User(AbstractUser):
    """The site's user; custom from the first migration so it can grow without a painful swap."""


def drawing_upload_path(instance: Drawing, filename: str) -> str:
    # Unguessable names, and the files are served only through a permission-checked view.
    return f"drawings/{instance.user_id}/{uuid.uuid4().hex}.png"


class ModelVersion(models.Model):
    """One trained model, written once to its own file in the model storage (recognizer.modelfiles)."""

    kind = models.CharField(max_length=16, default="knn")
    file = models.CharField(max_length=255, unique=True, help_text="Name in the model storage (recognizer.modelfiles).")
    sha256 = models.CharField(max_length=64)
    data_source = models.CharField(max_length=32, default="mnist")
    metadata = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model_version")
        ]

    def __str__(self) -> str:
        return f"v{self.pk} ({self.kind}{', active' if self.is_active else ''})"


class DrawingQuerySet(models.QuerySet):
    """The filters the feedback loop, the pages, the API and the admin share, written once."""

    def labelled(self) -> DrawingQuerySet:
        return self.filter(label__isnull=False)

    def unlabelled(self) -> DrawingQuerySet:
        return self.filter(label__isnull=True)

    def wrong(self) -> DrawingQuerySet:
        """Labelled, and the label differs from what the model answered."""
        return self.labelled().exclude(label=F("predicted_digit"))

    def right(self) -> DrawingQuerySet:
        return self.filter(label=F("predicted_digit"))

    def of_digit(self, digit: int) -> DrawingQuerySet:
        """A drawing's digit is its label when it has one, otherwise what the model said."""
        return self.filter(Q(label=digit) | Q(label__isnull=True, predicted_digit=digit))

    def not_rejected(self) -> DrawingQuerySet:
        """Labels staff have not judged wrong (what a user's own predictions and the figures use)."""
        return self.labelled().exclude(status=Drawing.Status.REJECTED)

    def pending(self) -> DrawingQuerySet:
        return self.labelled().filter(status=Drawing.Status.PENDING)

    def quarantined(self) -> DrawingQuerySet:
        """Labels the ranking found suspicious from an account whose trust is below the threshold, not yet
        reviewed: they stay out of the global model (training and the held-out set) until staff approve them.
        An account with no trust measured yet is not low-trust."""
        return self.pending().filter(suspicious=True, user__trust__score__lt=settings.RECOGNIZER_TRUST_THRESHOLD)

    def trusted(self) -> DrawingQuerySet:
        """Drawings whose label may be trained on.

        Approved by staff always counts. Without RECOGNIZER_REQUIRE_REVIEW an owner's label also counts
        unless staff rejected it, or it is quarantined: suspicious, from a low-trust account, and not yet
        approved. Suspicious labels of trusted accounts still count (the flag puts them in the review
        queue): they are mostly writer styles the model does not know yet, what the feedback loop learns
        from (bench/feedback_loop.py), and the caps and the gate bound what they can do.
        """
        labelled = self.labelled()
        if settings.RECOGNIZER_REQUIRE_REVIEW:
            return labelled.filter(status=Drawing.Status.APPROVED)
        return labelled.exclude(status=Drawing.Status.REJECTED).exclude(
            pk__in=Drawing.objects.quarantined().values("pk"))

    def visible_to(self, user) -> DrawingQuerySet:
        """Its owner's and staff's: anyone else sees none (the API answers 404, never "not yours")."""
        if user is None or not user.is_authenticated:
            return self.none()
        return self if user.is_staff else self.filter(user=user)


class Drawing(models.Model):
    """A digit a logged-in user drew, what the model said, and what the user and staff say it is."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="drawings")
    image = models.ImageField(upload_to=drawing_upload_path)
    # The 28x28 uint8 image the model saw, so review and retraining use exactly the same input.
    preprocessed = models.BinaryField(max_length=784)
    predicted_digit = models.PositiveSmallIntegerField()
    confidence = models.FloatField()
    probabilities = models.JSONField(default=list)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    # 0-9 only: checked by the field (forms, the admin) and by the database (bulk updates, raw SQL),
    # since a label out of that range would break every retrain.
    label = models.PositiveSmallIntegerField(null=True, blank=True,
                                             validators=[MinValueValidator(0), MaxValueValidator(9)])
    labelled_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviewed_drawings"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    suspicious = models.BooleanField(default=False, db_index=True)
    suspicion_score = models.FloatField(null=True, blank=True)
    strokes = models.JSONField(
        null=True, blank=True,
        help_text="The pen strokes sent with the image, as validated: [[[x, y, t], ...], ...], in the image's pixels "
                  "(y down), t in ms since the drawing started; null when the client sent only the image.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = DrawingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(label__isnull=True) | Q(label__gte=0, label__lte=9),
                                   name="drawing_label_is_a_digit"),
        ]

    def __str__(self) -> str:
        return f"Drawing {self.pk} by {self.user_id}: predicted {self.predicted_digit}, label {self.label}"

    @property
    def is_wrong(self) -> bool | None:
        return None if self.label is None else self.label != self.predicted_digit

    @property
    def stroke_count(self) -> int:
        return len(self.strokes) if isinstance(self.strokes, list) else 0


class TrainingRun(models.Model):
    """One retraining attempt: who started it, how far it got, and what it decided."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PROMOTED = "promoted", "Promoted"
        NOT_PROMOTED = "not_promoted", "Not promoted"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        THRESHOLD = "threshold", "New drawings threshold"
        STAFF = "staff", "Staff"
        COMMAND = "command", "Command line"

    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    task_id = models.CharField(max_length=64, blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=120, blank=True)
    data_counts = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    decision = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # "host:pid" of the process running it, so a dead worker on this host is noticed at once.
    worker = models.CharField(max_length=120, blank=True)
    # The retrain lock: true while queued or running; the constraint lets only one run hold it.
    holds_lock = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["holds_lock"], condition=Q(holds_lock=True), name="one_live_training_run")
        ]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class UserTrust(models.Model):
    """How far an account's labels can be trusted with the global model (recognizer.trust).

    Recomputed at every label ranking from how the account's labels agree with confident out-of-sample
    predictions and with other accounts' labels of similar drawings (staff approvals count as agreement,
    rejections as disagreement). Suspicious labels of an account below RECOGNIZER_TRUST_THRESHOLD are
    quarantined: left out of the global model until staff approve them. Trust never limits what an
    account's own drawings do for its own predictions.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="trust")
    score = models.FloatField(default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
                              help_text="Smoothed share of the account's checkable labels that agree (0-1).")
    n_labels = models.PositiveIntegerField(default=0, help_text="Labelled drawings ranked, rejected ones included.")
    n_agree = models.PositiveIntegerField(default=0)
    n_disagree = models.PositiveIntegerField(default=0)
    n_flagged = models.PositiveIntegerField(default=0, help_text="Labels flagged suspicious at the last ranking.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["score"]
        verbose_name = "user trust"
        verbose_name_plural = "user trust"

    def __str__(self) -> str:
        return f"Trust of user {self.user_id}: {self.score:.2f}"


class LabelEvidence(models.Model):
    """What the label ranking searched for one drawing, kept so the next ranking searches only drawings
    that are new to it (recognizer.feedback.flag_suspicious_labels).

    Arrays are raw native-endian bytes: about 1.8 KB a drawing with strokes (80 image and 160 stroke
    features and the lists), several times that as JSON.
    Valid only under the ids they were computed with: `model` for the probabilities (the whole
    estimator), `space` for the features and the neighbour list (its feature space: a retrain that refits
    in the active model's space keeps it; one from scratch fits another PCA basis, and everything is
    searched again once). Deleted with the drawing, and by the
    ranking when the drawing is rejected (a drawing that comes back is new: it was in no one's list).
    A spread retrain's workers store the probabilities and features ahead of the ranking, without neighbour
    lists for a drawing that had none in the space (feedback.precompute_evidence): the ranking then only
    searches its neighbours.
    The probabilities come from kept training lists: after a promotion in the same space (a refit) they are
    extended with the new model's rows only, and the probabilities are voted again from them; every row is
    searched again only in another space.
    """

    drawing = models.OneToOneField(Drawing, on_delete=models.CASCADE, primary_key=True,
                                   related_name="label_evidence")
    model = models.CharField(max_length=64, help_text="recognizer.trust.model_id of the estimator.")
    space = models.CharField(max_length=64, blank=True,
                             help_text="recognizer.trust.feature_space_id; empty when the model has no features.")
    probabilities = models.BinaryField(help_text="10 float64: out-of-sample probabilities, own account left out.")
    features = models.BinaryField(blank=True, help_text="float32: the drawing in the feature space.")
    neighbour_ids = models.BinaryField(
        blank=True, help_text="int64, trust.PEER_KEPT of them: the nearest other accounts' drawings, nearest "
                              "first, -1 padded; entries deleted or rejected since are skipped when used.")
    neighbour_distances = models.BinaryField(blank=True, help_text="float32, one per neighbour id (inf: padding).")
    # The out-of-sample probabilities' searches: the nearest training rows of other accounts of the model named
    # by `model`, as complete as TrainingRows records for it; the next model in the space searches only its
    # rows that are not in that record (recognizer.trust.extend_training_lists).
    training_neighbours = models.BinaryField(
        blank=True, help_text="int64 row keys (recognizer.trust.KnnPart.keys) of the image k-NN, nearest first.")
    training_distances = models.BinaryField(blank=True, help_text="float32, one per training neighbour.")
    stroke_features = models.BinaryField(
        blank=True, help_text="float32: the strokes in the stroke k-NN's space; empty when the drawing has none.")
    stroke_neighbours = models.BinaryField(blank=True, help_text="int64 row keys of the stroke k-NN, nearest first.")
    stroke_distances = models.BinaryField(blank=True, help_text="float32, one per stroke neighbour.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "label evidence"
        verbose_name_plural = "label evidence"

    def __str__(self) -> str:
        return f"Label evidence of drawing {self.drawing_id}"


class TrainingRows(models.Model):
    """The training rows of a model that label evidence was searched under (LabelEvidence.model): the rows its
    kept training-neighbour lists are complete over. One per model that evidence still names; the ranking
    deletes the others."""

    model = models.CharField(max_length=64, unique=True, help_text="recognizer.trust.model_id of the estimator.")
    digest = models.CharField(max_length=64, help_text="recognizer.trust.training_rows_digest of the estimator.")
    image_keys = models.BinaryField(help_text="int64 keys of the image k-NN's rows.")
    stroke_keys = models.BinaryField(blank=True, help_text="int64 keys of the stroke k-NN's rows, if it has one.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "training rows"
        verbose_name_plural = "training rows"

    def __str__(self) -> str:
        return f"Training rows of model {self.model[:12]}"


class PredictRequest(models.Model):
    """A stored prediction request under the client's Idempotency-Key (recognizer.idempotency).

    The same user sending the same key again within RECOGNIZER_IDEMPOTENCY_SECONDS gets this answer back
    instead of storing the drawing twice (a double click on Predict, a retry after a lost answer).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="predict_requests")
    key = models.CharField(max_length=255)
    # SHA-256 of what was sent (image, mode, strokes): the same key with another drawing is refused.
    fingerprint = models.CharField(max_length=64)
    response = models.JSONField(default=dict)
    # The drawings it stored, so deleting one of them forgets the stored answer too.
    drawings = models.ManyToManyField(Drawing, blank=True, related_name="predict_requests")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_predict_request_per_user_key")]

    def __str__(self) -> str:
        return f"Predict request {self.key!r} of user {self.user_id}"
