from django.http import JsonResponse


async def healthz(request):
    """Liveness: the process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})
