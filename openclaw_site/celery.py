"""The Celery application.

Embedded default: kombu's SQLAlchemy transport on an SQLite file, so a real
worker (with beat embedded, `celery -A openclaw_site worker -B`) runs with no
server. With REDIS_URL set, Redis is the broker and the result backend.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")

app = Celery("openclaw")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
