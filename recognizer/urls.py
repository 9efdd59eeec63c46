"""Page routes: the drawing page, sign-up, My drawings, drawing images."""

from django.urls import path

from recognizer import views
from recognizer.api.views import DrawingImage

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    # The login form posts here: Django's form and backend, plus the `login` throttle scope.
    path("accounts/sign-in/", views.ThrottledLoginView.as_view(), name="throttled-login"),
    path("drawings/", views.my_drawings, name="my-drawings"),
    # Drawing images are never under a public /media/ URL: owner or staff only, 404 otherwise.
    path("drawings/<int:pk>/image.png", DrawingImage.as_view(), name="drawing-image"),
]
