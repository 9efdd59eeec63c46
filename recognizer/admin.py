"""Django admin: review drawings (suspicious first), model versions with rollback, training runs."""

from __future__ import annotations

import base64
import io

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import F
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from PIL import Image

from recognizer import feedback, retraining, versions
from recognizer.ml import preprocess as ml_preprocess
from recognizer.ml.store import CorruptModelError
from recognizer.models import Drawing, ModelVersion, TrainingRun, User, UserTrust

admin.site.register(User, UserAdmin)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _drawing_png(drawing: Drawing) -> bytes | None:
    # Drawings are not public media: the admin inlines them rather than linking to a file URL.
    try:
        with drawing.image.open("rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _preprocessed_png(drawing: Drawing) -> bytes | None:
    try:
        image = ml_preprocess.from_uint8(bytes(drawing.preprocessed))
    except ValueError:
        return None
    buffer = io.BytesIO()
    Image.fromarray((image * 255).astype("uint8"), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _img(png: bytes | None, size: int, label: str) -> str:
    if png is None:
        return "-"
    return format_html('<img src="{}" width="{}" height="{}" alt="{}" style="background:#fff;border:1px solid #ccc;'
                       'image-rendering:pixelated">', _data_uri(png), size, size, label)


class WrongPredictionFilter(admin.SimpleListFilter):
    title = "prediction"
    parameter_name = "prediction"

    def lookups(self, request, model_admin):
        return [("wrong", "Wrong (label differs)"), ("right", "Right"), ("unlabelled", "Not labelled")]

    def queryset(self, request, queryset):
        if self.value() == "wrong":
            return queryset.wrong()
        if self.value() == "right":
            return queryset.right()
        if self.value() == "unlabelled":
            return queryset.unlabelled()
        return queryset


def _review(request, queryset, status: str, label: int | None = None) -> int:
    return feedback.review(queryset, request.user, status, label=label)


def _reject_users(model_admin, request, user_ids: set) -> None:
    """The drawing list's and the trust list's bulk reject by user, with one message."""
    count = feedback.reject_pending_labels_of(user_ids, request.user)
    model_admin.message_user(request, f"{count} pending label(s) of {len(user_ids)} user(s) rejected; their trust "
                                      "drops at the next ranking.")


def _rank(model_admin, request) -> None:
    summary = feedback.flag_suspicious_labels()
    model_admin.message_user(request, f"Ranked {summary['ranked']} labelled drawings of {summary.get('accounts', 0)} "
                                      f"accounts: {summary['suspicious']} suspicious, "
                                      f"{summary.get('quarantined', 0)} quarantined.")


def _trust_text(trust: UserTrust | None) -> str:
    if trust is None:
        return "-"
    low = " (low)" if trust.score < settings.RECOGNIZER_TRUST_THRESHOLD else ""
    return f"{trust.score * 100:.0f}%{low}"


class QuarantinedFilter(admin.SimpleListFilter):
    title = "quarantine"
    parameter_name = "quarantined"

    def lookups(self, request, model_admin):
        return [("yes", "Quarantined (suspicious, low-trust account)"), ("low_trust", "Any label of a low-trust account")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.quarantined()
        if self.value() == "low_trust":
            return queryset.filter(user__trust__score__lt=settings.RECOGNIZER_TRUST_THRESHOLD)
        return queryset


def _relabel_action(digit: int):
    def action(modeladmin, request, queryset):
        count = _review(request, queryset, Drawing.Status.APPROVED, label=digit)
        modeladmin.message_user(request, f"{count} drawing(s) relabelled as {digit} and approved.")

    action.__name__ = f"relabel_as_{digit}"
    action.short_description = f"Relabel as {digit} (and approve)"
    return action


@admin.register(Drawing)
class DrawingAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "id", "user", "user_trust", "predicted_digit", "confidence_percent", "label", "wrong",
                    "status", "suspicious", "suspicion", "strokes_summary", "reviewer", "created_at"]
    list_display_links = ["thumbnail", "id"]
    list_filter = ["status", "suspicious", QuarantinedFilter, WrongPredictionFilter, "label", "predicted_digit",
                   ("user", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["user__username", "user__email"]
    # Suspicious labels first, most suspicious on top: that is where poisoning would hide.
    ordering = ["-suspicious", F("suspicion_score").desc(nulls_last=True), "-created_at"]
    list_select_related = ["user", "user__trust", "reviewer"]
    list_per_page = 50
    date_hierarchy = "created_at"
    actions = ["approve", "reject", "reject_users", "rank_suspicious"] + [_relabel_action(d) for d in range(10)]
    fields = ["drawing_large", "preprocessed_image", "user", "created_at", "model_version", "predicted_digit",
              "confidence_percent", "probabilities_table", "label", "labelled_at", "status", "reviewer", "reviewed_at",
              "suspicious", "suspicion_score", "strokes_summary"]
    readonly_fields = ["drawing_large", "preprocessed_image", "user", "created_at", "model_version", "predicted_digit",
                       "confidence_percent", "probabilities_table", "labelled_at", "reviewer", "reviewed_at",
                       "suspicious", "suspicion_score", "strokes_summary"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="drawing")
    def thumbnail(self, obj: Drawing) -> str:
        return _img(_drawing_png(obj), 56, f"drawing {obj.pk}")

    @admin.display(description="drawing")
    def drawing_large(self, obj: Drawing) -> str:
        return _img(_drawing_png(obj), 280, f"drawing {obj.pk}")

    @admin.display(description="what the model saw (28x28)")
    def preprocessed_image(self, obj: Drawing) -> str:
        return _img(_preprocessed_png(obj), 280, "preprocessed 28x28")

    @admin.display(description="user trust", ordering="user__trust__score")
    def user_trust(self, obj: Drawing) -> str:
        return _trust_text(getattr(obj.user, "trust", None))

    @admin.display(description="confidence", ordering="confidence")
    def confidence_percent(self, obj: Drawing) -> str:
        return f"{obj.confidence * 100:.0f}%"

    @admin.display(description="wrong", boolean=True)
    def wrong(self, obj: Drawing) -> bool | None:
        return obj.is_wrong

    @admin.display(description="suspicion", ordering="suspicion_score")
    def suspicion(self, obj: Drawing) -> str:
        return "-" if obj.suspicion_score is None else f"{obj.suspicion_score:.2f}"

    @admin.display(description="strokes")
    def strokes_summary(self, obj: Drawing) -> str:
        # The pen strokes sent with the image (the page and the desktop client send them); "-" when only the image came.
        if not obj.strokes:
            return "-"
        points = sum(len(stroke) for stroke in obj.strokes if isinstance(stroke, list))
        return f"{obj.stroke_count} ({points} points)"

    @admin.display(description="probabilities")
    def probabilities_table(self, obj: Drawing) -> str:
        if not obj.probabilities:
            return "-"
        cells = format_html_join("", "<td>{}<br>{}%</td>", ((d, round(p * 100)) for d, p in enumerate(obj.probabilities)))
        return format_html("<table><tr>{}</tr></table>", cells)

    def save_model(self, request, obj: Drawing, form, change: bool) -> None:
        if change and {"label", "status"} & set(form.changed_data):
            feedback.review_drawing(obj, request.user, label_changed="label" in form.changed_data)
        else:
            super().save_model(request, obj, form, change)

    @admin.action(description="Approve the labels (trusted for training)")
    def approve(self, request, queryset):
        self.message_user(request, f"{_review(request, queryset, Drawing.Status.APPROVED)} drawing(s) approved.")

    @admin.action(description="Reject (never trained on)")
    def reject(self, request, queryset):
        self.message_user(request, f"{_review(request, queryset, Drawing.Status.REJECTED)} drawing(s) rejected.")

    @admin.action(description="Reject every pending label of these drawings' users (bulk reject by user)")
    def reject_users(self, request, queryset):
        _reject_users(self, request, set(queryset.values_list("user_id", flat=True)))

    @admin.action(description="Re-rank suspicious labels and user trust now (all drawings)")
    def rank_suspicious(self, request, queryset):
        _rank(self, request)


@admin.register(UserTrust)
class UserTrustAdmin(admin.ModelAdmin):
    """Per-account trust, lowest first: who the global model listens to, and bulk rejection by account."""

    list_display = ["user", "trust", "n_labels", "n_agree", "n_disagree", "n_flagged", "pending_labels",
                    "quarantined", "drawings_link", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email"]
    ordering = ["score"]
    readonly_fields = ["user", "score", "n_labels", "n_agree", "n_disagree", "n_flagged", "updated_at"]
    actions = ["reject_pending", "rank"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="trust", ordering="score")
    def trust(self, obj: UserTrust) -> str:
        return _trust_text(obj)

    @admin.display(description="pending labels")
    def pending_labels(self, obj: UserTrust) -> int:
        return Drawing.objects.filter(user_id=obj.user_id).pending().count()

    @admin.display(description="quarantined")
    def quarantined(self, obj: UserTrust) -> int:
        return Drawing.objects.filter(user_id=obj.user_id).quarantined().count()

    @admin.display(description="drawings")
    def drawings_link(self, obj: UserTrust) -> str:
        url = reverse("admin:recognizer_drawing_changelist") + f"?user__id__exact={obj.user_id}"
        return format_html('<a href="{}">review</a>', url)

    @admin.action(description="Reject every pending label of the selected users")
    def reject_pending(self, request, queryset):
        _reject_users(self, request, set(queryset.values_list("user_id", flat=True)))

    @admin.action(description="Re-rank labels and user trust now")
    def rank(self, request, queryset):
        _rank(self, request)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "is_active", "data_source", "mnist_accuracy", "holdout_accuracy", "canvas_accuracy",
                    "created_at", "activated_at"]
    list_filter = ["is_active", "kind", "data_source"]
    readonly_fields = ["kind", "file", "sha256", "data_source", "metadata", "metrics", "is_active", "created_at",
                       "activated_at"]
    actions = ["activate"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @staticmethod
    def _accuracy(obj: ModelVersion, key: str) -> str:
        value = obj.metrics.get(key)
        if isinstance(value, dict):  # a figure on writers it trained on (stored by older versions) is no figure
            value = None if value.get("writers_seen_in_training") else value.get("accuracy")
        return "-" if value is None else f"{value * 100:.2f}%"

    @admin.display(description="MNIST test")
    def mnist_accuracy(self, obj: ModelVersion) -> str:
        return self._accuracy(obj, "mnist_test")

    @admin.display(description="held-out users")
    def holdout_accuracy(self, obj: ModelVersion) -> str:
        return self._accuracy(obj, "holdout")

    @admin.display(description="canvas")
    def canvas_accuracy(self, obj: ModelVersion) -> str:
        return self._accuracy(obj, "canvas")

    @admin.action(description="Activate the selected version (rollback)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            versions.activate(version, by=request.user)
        except (CorruptModelError, OSError) as exc:
            self.message_user(request, f"Model v{version.pk} cannot be activated: {exc}", messages.ERROR)
            return
        self.message_user(request, f"Model v{version.pk} is now active; web workers switch within seconds.")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "trigger", "started_by", "status", "progress_percent", "stage", "user_drawings",
                    "left_out", "model_version", "created_at", "duration"]
    list_filter = ["status", "trigger"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields] + ["duration"]
    change_list_template = "admin/recognizer/trainingrun/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="progress")
    def progress_percent(self, obj: TrainingRun) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description="user drawings (train / held out)")
    def user_drawings(self, obj: TrainingRun) -> str:
        counts = obj.data_counts or {}
        return f"{counts.get('user_train', '-')} / {counts.get('holdout', '-')}"

    @admin.display(description="left out (quarantined / accounts)")
    def left_out(self, obj: TrainingRun) -> str:
        counts, decision = obj.data_counts or {}, obj.decision or {}
        accounts = ", ".join(c.get("username") or str(c.get("user")) for c in decision.get("left_out", []))
        return f"{counts.get('quarantined', '-')} / {accounts or '-'}"

    @admin.display(description="duration")
    def duration(self, obj: TrainingRun) -> str:
        seconds = obj.duration_seconds
        return "-" if seconds is None else f"{seconds:.0f} s"

    def get_urls(self):
        view = self.admin_site.admin_view(require_POST(self.start_retrain_view))
        return [path("retrain/", view, name="recognizer_trainingrun_retrain")] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "live_run": retraining.live_run(),
                         "retrain_kind": settings.RECOGNIZER_RETRAIN_KIND}
        return super().changelist_view(request, extra_context)

    def start_retrain_view(self, request):
        if not request.user.is_staff:
            return HttpResponseRedirect(reverse("admin:index"))
        try:
            run, created = retraining.start_retrain(TrainingRun.Trigger.STAFF, request.user)
        except retraining.TrainingUnavailable as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:recognizer_trainingrun_changelist"))
        if created:
            self.message_user(request, f"Retrain queued: run {run.pk}, task {run.task_id}.")
        else:
            self.message_user(request, f"A retrain is already {run.status}: run {run.pk}, task {run.task_id}.",
                              messages.WARNING)
        return HttpResponseRedirect(reverse("admin:recognizer_trainingrun_changelist"))
