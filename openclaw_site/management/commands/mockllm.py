"""``manage.py mockllm``: run the mock LLM (same options as ``python -m mockllm``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from mockllm.__main__ import add_arguments, run


class Command(BaseCommand):
    help = (
        "Run the OpenAI-compatible mock LLM server (demo, tests, benchmarks). Prints "
        "'mockllm listening on http://HOST:PORT' once listening; SIGTERM/SIGINT stop it."
    )
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        try:
            run(
                host=options["host"],
                port=options["port"],
                rate=options["rate"],
                ttft_ms=options["ttft_ms"],
                default_tokens=options["default_tokens"],
                log_level=options["log_level"],
            )
        except OSError as exc:
            raise CommandError(
                f"mockllm: cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from exc
