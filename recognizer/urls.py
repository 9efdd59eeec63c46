"""Page routes: the drawing page, sign-up, My drawings, drawing images."""

urlpatterns: list = []
