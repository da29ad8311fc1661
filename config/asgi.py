import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

application = get_asgi_application()

from completions.asgi import with_gateway  # noqa: E402 - needs the app registry loaded

application = with_gateway(application)
