"""Page routes: the drawing page, sign-up, My drawings, drawing images, deleting a drawing or the account."""

from django.urls import path

from recognizer import views
from recognizer.api.views import DrawingImage
from recognizer.dashboard import StaffDashboard

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/delete/", views.delete_account, name="delete-account"),
    path("drawings/", views.my_drawings, name="my-drawings"),
    path("drawings/<int:pk>/delete/", views.delete_drawing, name="delete-drawing"),
    path("staff/dashboard/", StaffDashboard.as_view(), name="staff-dashboard"),
    # Drawing images are never under a public /media/ URL: owner or staff only, 404 otherwise.
    path("drawings/<int:pk>/image.png", DrawingImage.as_view(), name="drawing-image"),
]
