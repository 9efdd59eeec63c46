"""WSGI entry point for gunicorn and other WSGI servers."""

import os

# One BLAS thread per web process: a single k-NN query is one small matmul, and on a busy 2-core
# machine multi-threaded BLAS turned a 1.1 ms median prediction into 16 ms (bench/recognition.py).
# Set before NumPy loads; Celery workers keep multi-threaded BLAS for training.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from django.core.wsgi import get_wsgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings.base")

application = get_wsgi_application()
