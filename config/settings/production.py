# Production never falls back to the embedded servers: settings start nothing, and manage.py
# does not start them under these settings.
from config.env import env
from config.settings.base import *  # noqa: E402, F403

# A secret missing or too short stops every process (migrate, web, worker, beat) with one line
# naming it: SystemExit prints its message alone, where ImproperlyConfigured printed a
# traceback through django-environ that an operator had to read to the bottom.
_SECRETS = (("DJANGO_SECRET_KEY", 32), ("ENGRAM_ADMIN_KEY", 24))
_unset = [
    f"{name} ({least}+ characters)"
    for name, least in _SECRETS
    if len(env.str(name, default="").strip()) < least
]
if _unset:
    raise SystemExit(
        f"engram: set {' and '.join(_unset)} (config.settings.production; "
        'python -c "import secrets; print(secrets.token_urlsafe(48))" makes one)'
    )
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ENGRAM_KEY_PEPPER = env("ENGRAM_KEY_PEPPER", default=SECRET_KEY)
ENGRAM_ADMIN_KEY = env.str("ENGRAM_ADMIN_KEY")
DEBUG = False
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
