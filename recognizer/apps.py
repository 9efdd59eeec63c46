from django.apps import AppConfig


class RecognizerConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'recognizer'

    def ready(self) -> None:
        from recognizer import signals  # noqa: F401 - connects the receivers
