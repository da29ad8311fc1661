#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    if os.environ["DJANGO_SETTINGS_MODULE"] != "config.settings.production":
        from config.embedded import ensure_environment

        ensure_environment()  # the embedded servers, where DATABASE_URL / REDIS_URL are unset
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
