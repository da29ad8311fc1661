import os

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES

# Parallel checkouts on one server each get their own test database.
DATABASES["default"]["TEST"] = {"NAME": "test_engram_" + os.environ.get("ENGRAM_TEST_DB", "main")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ENGRAM_ADMIN_KEY = "test-admin-key-0123456789"
LOG_LEVEL = "WARNING"
LOGGING = {**LOGGING, "root": {"handlers": ["console"], "level": "WARNING"}}  # noqa: F405
# Static files straight from the apps: no collectstatic before a test run.
WHITENOISE_USE_FINDERS = True
