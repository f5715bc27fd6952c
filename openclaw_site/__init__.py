"""OpenClaw Gateway project package (settings, ASGI entry point, Celery app)."""
from openclaw_site.celery import app as celery_app

__all__ = ("celery_app",)
