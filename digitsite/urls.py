from django.contrib import admin
from django.contrib.auth.views import PasswordResetView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from recognizer.health import healthz
from recognizer.views import ThrottledLoginView, throttle_password_posts

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/login/", throttle_password_posts(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("recognizer.api.urls")),
    path("api/v1/", include("recognizer.api.training_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Ahead of Django's auth URLs, so every login attempt counts against the `login` throttle.
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/password_reset/", throttle_password_posts(PasswordResetView.as_view()), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("recognizer.urls")),
]
