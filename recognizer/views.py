"""Pages: the drawing page, sign-up, a throttled login, My drawings (deleting one), and deleting the
account. Predictions and labels go through the REST API (one path for the page and every other client)."""

from __future__ import annotations

import functools

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from recognizer import insights, userdata
from recognizer.api.filters import DrawingFilter
from recognizer.api.throttles import LoginThrottle
from recognizer.forms import DeleteAccountForm, SignUpForm
from recognizer.models import Drawing

DRAWINGS_PER_PAGE = 24


def password_attempt_refused(request: HttpRequest) -> int | None:
    """Counts a password attempt against the `login` throttle; seconds to wait once it is spent."""
    throttle = LoginThrottle()
    if throttle.allow_request(request, None):
        return None
    return int((throttle.wait() or 60) + 0.999)


def throttle_password_posts(view):
    """POSTs to `view` count against the `login` throttle, per address: the admin login and the
    password reset form would otherwise be a way around the throttled login (or a mail flood)."""

    @functools.wraps(view)
    def throttled(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        wait = password_attempt_refused(request) if request.method == "POST" else None
        if wait is not None:
            return HttpResponse(f"Too many attempts from your address. Try again in {wait} seconds.",
                                status=429, content_type="text/plain; charset=utf-8")
        return view(request, *args, **kwargs)

    return throttled


@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "recognizer/home.html", {"max_upload_bytes": settings.RECOGNIZER_MAX_UPLOAD_BYTES})


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Your drawings will now be kept.")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


class ThrottledLoginView(LoginView):
    """Django's login form, with the `login` throttle scope counting attempts per address."""

    def post(self, request, *args, **kwargs):
        wait = password_attempt_refused(request)
        if wait is not None:
            form = self.get_form()
            form.add_error(None, f"Too many login attempts. Try again in {wait} seconds.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


@login_required
def my_drawings(request: HttpRequest) -> HttpResponse:
    filters = DrawingFilter(request.GET, queryset=Drawing.objects.filter(user=request.user).select_related("model_version"))
    form = filters.form  # the page shows its digit and result fields
    drawings = filters.qs if filters.is_valid() else filters.queryset
    page = Paginator(drawings, DRAWINGS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "recognizer/my_drawings.html",
                  {"form": form, "page": page, "query": query.urlencode(), "digits": range(10),
                   "accuracy": insights.user_accuracy(request.user)})


def _back_to_my_drawings(request: HttpRequest) -> str:
    """Where to go after deleting: the filtered, paginated My drawings page it came from."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse("my-drawings")


@login_required
@require_http_methods(["GET", "POST"])
def delete_drawing(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: confirm; POST: delete one of your own drawings and its image (404 for anyone else's)."""
    drawing = get_object_or_404(Drawing, pk=pk, user=request.user)
    if request.method == "POST":
        userdata.delete_drawing(drawing)
        messages.success(request, f"Drawing {pk} is deleted, with its image.")
        return redirect(_back_to_my_drawings(request))
    return render(request, "recognizer/drawing_confirm_delete.html",
                  {"drawing": drawing, "next": _back_to_my_drawings(request)})


@login_required
@require_http_methods(["GET", "POST"])
@throttle_password_posts
def delete_account(request: HttpRequest) -> HttpResponse:
    """Delete the account and everything that is theirs, once they confirm with their password."""
    form = DeleteAccountForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        username = request.user.get_username()
        userdata.delete_account(request.user)
        logout(request)
        messages.success(request, f"The account {username} and all its drawings are deleted.")
        return redirect("home")
    return render(request, "registration/account_delete.html",
                  {"form": form, "drawings": Drawing.objects.filter(user=request.user).count()})
