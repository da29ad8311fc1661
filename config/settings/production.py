# Production never falls back to the embedded servers: settings start nothing, and manage.py
# does not start them under these settings.
from django.core.exceptions import ImproperlyConfigured

from config.env import env
from config.settings.base import *  # noqa: E402, F403

SECRET_KEY = env("DJANGO_SECRET_KEY")
ENGRAM_KEY_PEPPER = env("ENGRAM_KEY_PEPPER", default=SECRET_KEY)
ENGRAM_ADMIN_KEY = env("ENGRAM_ADMIN_KEY")
if len(SECRET_KEY) < 32 or len(ENGRAM_ADMIN_KEY) < 24:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY (32+) and ENGRAM_ADMIN_KEY (24+) must be set")
DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
