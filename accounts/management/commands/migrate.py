"""Django's `migrate`, without the database bounds a request has (config.common.database): a
migration may build an index or rewrite a table for longer than a request should wait; and
one at a time on a database (two run together fail on the tables both create)."""

from django.core.management.commands import migrate

from config.common import database


class Command(migrate.Command):
    def handle(self, *args, **options):
        with database.migrating(), database.one_migration_at_a_time(options["database"]):
            return super().handle(*args, **options)
