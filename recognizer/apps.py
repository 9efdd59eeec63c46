from django.apps import AppConfig


class RecognizerConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'recognizer'

    def ready(self) -> None:
        # Registers the Celery tasks in every process, the web's too: the rooms below queue them by name
        # (recognizer.dispatch), and Celery's autodiscovery runs only when a worker starts.
        from recognizer import (
            signals,  # noqa: F401 - connects the receivers
            tasks,  # noqa: F401
        )
