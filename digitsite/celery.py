"""The Celery app: settings under the CELERY_ namespace, tasks discovered in each app's tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings.base")

app = Celery("digitsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
