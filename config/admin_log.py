"""The admin's history (django.contrib.admin.models.LogEntry) of rows that are erased.

A LogEntry keeps `object_repr`, the row's `str()` when an operator added, changed or deleted
it: a memory's text, a message's words, a conversation's title. It outlived the row: erasing
an end user, or deleting a workspace, left those words in `django_admin_log` (and in the
admin's "Recent actions"). Erasures delete the entries of the rows they erase with this.
"""

from __future__ import annotations

from django.contrib.admin.models import LogEntry
from django.db.models import Model, QuerySet, TextField
from django.db.models.functions import Cast


def log_entries_delete(*, model: type[Model], rows: QuerySet, field: str = "pk") -> int:
    """Delete the admin log entries of the `model` rows whose ids are `field` of `rows` (the
    rows themselves, or rows naming them: a deleted memory's MemoryEvents); how many. Reads
    nothing into Python: one DELETE, the ids a subquery."""
    meta = model._meta
    ids = rows.order_by().values_list(Cast(field, TextField()))
    entries = LogEntry.objects.filter(
        content_type__app_label=meta.app_label,  # its content type, in the statement too
        content_type__model=meta.model_name,
        object_id__in=ids,
    )
    return entries._raw_delete(LogEntry.objects.db)
